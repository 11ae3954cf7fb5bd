"""The client's session reads the proxy variables once per address, and still obeys them: a
worker behind an HTTP proxy (HTTP_PROXY / NO_PROXY) sends every call through it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from worker.loyalty import session_factory


class Proxy:
    """A real HTTP proxy on a local socket: records each request line, answers ``{}``."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.request_lines: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.request_lines.append(data.split(b"\r\n", 1)[0].decode())
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    server = Proxy()
    yield server
    server.close()


def test_every_call_goes_through_the_proxy_the_environment_names(proxy, monkeypatch):
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    session = session_factory()
    for path in ("/v2/coupon/redeem", "/v2/points/updateRedemption", "/v2/coupon/redeem"):
        answer = session.put(f"http://loyalty.example.invalid{path}", data=b"{}", timeout=5)
        assert answer.json() == {}
    assert proxy.request_lines == [
        "PUT http://loyalty.example.invalid/v2/coupon/redeem HTTP/1.1",
        "PUT http://loyalty.example.invalid/v2/points/updateRedemption HTTP/1.1",
        "PUT http://loyalty.example.invalid/v2/coupon/redeem HTTP/1.1",
    ]


def test_an_address_no_proxy_names_is_called_directly(proxy, monkeypatch):
    direct = Proxy()  # here: the platform itself, reached without the proxy
    try:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        monkeypatch.delenv("no_proxy", raising=False)
        session = session_factory()
        for _ in range(2):
            session.get(f"http://127.0.0.1:{direct.port}/v2/customer", timeout=5)
        session.get("http://loyalty.example.invalid/v2/customer", timeout=5)
        assert direct.request_lines == ["GET /v2/customer HTTP/1.1"] * 2
        assert proxy.request_lines == ["GET http://loyalty.example.invalid/v2/customer HTTP/1.1"]
    finally:
        direct.close()
