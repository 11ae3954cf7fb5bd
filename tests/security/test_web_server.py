"""`recon web` as shipped: a production WSGI server, loopback unless a token guards it.

Runs the installed wheel's `recon web` (``RECON_TEST_VENV``, see tests/shipped.py) and talks to
it over a real socket.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.shipped import RECON, product_env
from worker.ops import migrate

TOKEN = "server-token-41c9"


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('served') / 'recon.sqlite3'}"
    migrate.upgrade(url)
    return url


def start_web(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [RECON, "web", *args],
            env=product_env(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
        )


def serving_url(process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"serving (http://\S+)", log.read_text())
        if found:
            return found.group(1).rstrip("/")
        if process.poll() is not None:
            pytest.fail(f"recon web exited with {process.returncode}: {log.read_text()}")
        time.sleep(0.1)
    pytest.fail(f"recon web did not say where it serves: {log.read_text()}")


@pytest.fixture
def served(sqlite_url, tmp_path) -> Iterator[tuple[str, Path]]:
    log = tmp_path / "web.log"
    process = start_web(
        ["--port", "0"], {"RECON_DATABASE_URL": sqlite_url, "RECON_WEB_TOKEN": TOKEN}, log
    )
    try:
        yield serving_url(process, log), log
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_recon_web_answers_over_a_socket_from_a_production_server(served):
    url, log = served
    assert "waitress" in log.read_text()
    http = requests.Session()
    assert http.get(f"{url}/summary", timeout=10).status_code == 401
    signed_in = http.post(
        f"{url}/login", data={"token": TOKEN, "next": "/failures"}, timeout=10,
        allow_redirects=False,
    )  # fmt: skip
    assert signed_in.status_code == 302
    assert signed_in.headers["Location"] == "/failures"
    page = http.get(f"{url}/failures", timeout=10)
    assert page.status_code == 200
    assert "Werkzeug" not in page.headers.get("Server", "")
    assert http.get(f"{url}/failures?size=²", timeout=10).status_code == 400
    http.post(f"{url}/logout", timeout=10)
    assert http.get(f"{url}/failures", timeout=10, allow_redirects=False).status_code == 401


def test_a_slow_client_does_not_hold_the_page_for_others(served):
    url, _ = served
    host, port = url.removeprefix("http://").rsplit(":", 1)
    # Half a request, never finished: the server buffers it instead of blocking a thread on it.
    slow = [socket.create_connection((host, int(port)), timeout=10) for _ in range(8)]
    try:
        for conn in slow:
            conn.sendall(b"GET /summary HTTP/1.1\r\nHost: x\r\n")
        answer = requests.get(f"{url}/login", timeout=10)
        assert answer.status_code == 200
    finally:
        for conn in slow:
            conn.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_recon_web_refuses_an_outside_address_without_a_token(sqlite_url, tmp_path, host):
    done = subprocess.run(
        [RECON, "web", "--host", host, "--port", "0"],
        env=product_env({"RECON_DATABASE_URL": sqlite_url, "RECON_WEB_TOKEN": ""}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "RECON_WEB_TOKEN" in line
    assert "--insecure-no-token" in line


def test_recon_web_serves_an_outside_address_without_a_token_only_when_told(sqlite_url, tmp_path):
    log = tmp_path / "web.log"
    process = start_web(
        ["--host", "0.0.0.0", "--port", "0", "--insecure-no-token"],
        {"RECON_DATABASE_URL": sqlite_url, "RECON_WEB_TOKEN": ""},
        log,
    )
    try:
        url = serving_url(process, log)
        port = url.rsplit(":", 1)[1]
        assert requests.get(f"http://127.0.0.1:{port}/summary", timeout=10).status_code == 200
        assert "without RECON_WEB_TOKEN" in log.read_text()
    finally:
        process.terminate()
        process.wait(timeout=15)
