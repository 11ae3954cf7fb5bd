"""Hostile content shown to operators: credentials masked whatever the spelling of their key,
bounded in size and depth, escaped for terminals; in `recon dead`, `recon audit rejected`, the
audit page and the logs. Real RabbitMQ and PostgreSQL; the commands as an operator runs them."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time

import pytest
import structlog
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st
from sqlalchemy import Engine

from models.session import unit_of_work
from tests.security.dead import depth, listed, publish, recon_dead
from tests.shipped import RECON
from tests.workers import Workers, wait_for
from worker.queues import DEAD_QUEUE

# A different secret under each spelling, so a leak names the spelling that leaked.
CREDENTIAL_KEYS = (
    "api key", "apikey", "api_key", "X-Api-Key", "apiKey", "secret", "client-secret",
    "clientSecret", "client_secret", "token", "access_token", "X-Auth-Token", "password",
    "Password", "passwd", "authorization", "Proxy-Authorization", "cookie", "Set-Cookie",
    "private key", "private_key", "privateKey",
)  # fmt: skip
SECRETS = {
    key: f"S3CR3T-{n:02d}-{key.replace(' ', '')[:3]}" for n, key in enumerate(CREDENTIAL_KEYS)
}
INTAKE_HEADERS = {
    "x-recon-reason": "could not be stored",
    "x-recon-original-exchange": "orders",
    "x-recon-original-routing-key": "coupon.redeemed",
}
CONTROL = ("\x1b", "\x07", "\x9b", "\x00", "\u202e", "\x08", "\r")


def leaked(text: str) -> list[str]:
    return [key for key, secret in SECRETS.items() if secret in text]


def hostile_body() -> bytes:
    nested = {"outer": [{key: secret} for key, secret in list(SECRETS.items())[:6]]}
    return json.dumps({"event_id": "evt-hostile", **SECRETS, "nested": nested}).encode()


def publish_dead(workers: Workers, body: bytes, headers: dict, routing_key: str) -> None:
    """A dead letter as the intake writes one (anyone who may publish to recon.dlx can too)."""
    before = depth(workers, DEAD_QUEUE.name)
    publish(workers, body, exchange="recon.dlx", routing_key=routing_key, headers=headers)
    wait_for(lambda: depth(workers, DEAD_QUEUE.name) == before + 1)


@pytest.fixture
def dead_queue(workers):
    from kombu import Connection

    with Connection(workers.settings.broker_url) as conn:
        DEAD_QUEUE(conn.default_channel).declare()
        conn.default_channel.queue_purge(DEAD_QUEUE.name)
    yield
    with Connection(workers.settings.broker_url) as conn:
        conn.default_channel.queue_purge(DEAD_QUEUE.name)


def web_page(workers: Workers, path: str):
    from worker.settings import load_settings
    from worker.web import create_app

    client = create_app(load_settings(workers.env)).test_client()
    return client.get(path, headers={"Accept": "text/html"})


@pytest.mark.e2e
def test_credentials_in_a_dead_letter_are_masked_however_their_keys_are_spelt(workers, dead_queue):
    headers = {key: secret for key, secret in SECRETS.items()}
    headers |= {
        "x-recon-reason": "could not be stored; password=" + SECRETS["password"],
        "x-recon-original-exchange": "orders",
        "x-recon-original-routing-key": "coupon.redeemed",
    }
    publish_dead(workers, hostile_body(), headers, "coupon.redeemed")
    [row] = listed(workers)
    shown = recon_dead(workers, "show", row["id"])
    table = recon_dead(workers, "list")

    assert shown.returncode == 0, shown.stderr
    assert table.returncode == 0, table.stderr
    assert "evt-hostile" in shown.stdout  # the rest of the body is still there to read
    assert leaked(json.dumps(row)) == []
    assert leaked(shown.stdout + shown.stderr) == []
    assert leaked(table.stdout + table.stderr) == []
    page = web_page(workers, "/dead")
    assert page.status_code == 200
    assert leaked(page.get_data(as_text=True)) == []


@pytest.mark.e2e
def test_terminal_escapes_and_rich_markup_in_a_dead_letter_reach_no_terminal(workers, dead_queue):
    hostile = "\x1b]0;owned\x07\x1b[2J\x9b31m\u202eevil\x08\r[/x][bold]"
    body = ("not json " + hostile).encode()
    headers = {
        "x-recon-reason": "bad " + hostile,
        "x-recon-original-exchange": "orders" + hostile,
        "x-recon-original-routing-key": "coupon.redeemed",
        "note": hostile,
    }
    publish_dead(workers, body, headers, "coupon.redeemed" + hostile)
    [row] = listed(workers)
    for args in (("show", row["id"]), ("list",), ("list", "--format", "csv")):
        result = recon_dead(workers, *args)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert [c for c in CONTROL if c in result.stdout] == [], args
        assert "\\x1b" in result.stdout  # shown, as an escape
        if args[0] == "list" and len(args) == 1:
            assert "[/x][bold]" in result.stdout  # markup is text, not a command to rich


@pytest.mark.e2e
def test_a_dead_letter_nested_100000_deep_is_listed_shown_and_paged(workers, dead_queue):
    body = b"[" * 100_000 + b"]" * 100_000
    headers = {"x-recon-reason": "too deep", "x-recon-original-exchange": "orders",
               "x-recon-original-routing-key": "coupon.redeemed"}  # fmt: skip
    publish_dead(workers, body, headers, "coupon.redeemed")
    started = time.monotonic()
    listing = recon_dead(workers, "list", "--format", "json")
    assert listing.returncode == 0, listing.stderr[-2000:]
    [row] = json.loads(listing.stdout)
    assert row["size"] == 200_000
    assert len(row["excerpt"]) <= 300
    shown = recon_dead(workers, "show", row["id"])
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "RecursionError" not in shown.stderr + listing.stderr
    assert time.monotonic() - started < 60  # two commands, not minutes of CPU
    assert web_page(workers, "/dead").status_code == 200


@pytest.mark.e2e
def test_a_dead_letter_with_headers_nested_10000_deep_does_not_stop_the_listing(
    workers, dead_queue
):
    """AMQP header tables nest as deep as one frame holds; py-amqp decodes them recursively."""
    deep: dict = {}
    level = deep
    for _ in range(10_000):
        level["a"] = {}
        level = level["a"]
    level["password"] = SECRETS["password"]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(30_000)  # our publisher's encoder recurses too
    try:
        publish_dead(workers, b"{}", {"deep": deep, **INTAKE_HEADERS}, "coupon.redeemed")
    finally:
        sys.setrecursionlimit(limit)
    publish_dead(workers, b'{"n": 2}', INTAKE_HEADERS, "coupon.redeemed")
    rows = listed(workers)
    assert [row["excerpt"] for row in rows] == ["{}", '{"n":2}']
    shown = recon_dead(workers, "show", rows[0]["id"])
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert leaked(shown.stdout) == []


@pytest.fixture
def rejected_rows(pg_url: str, clean_db: Engine):
    """Rejected rows as the intake stores them (its own function), hostile bodies included."""
    from worker.intake.store import store_rejected

    bodies = {
        "creds": hostile_body()[:350],  # the listing shows the first few hundred characters
        "deep": b"{" * 100_000,
        "escapes": b"\x1b]0;owned\x07 \x9b31m \xe2\x80\xae [/x] password="
        + SECRETS["password"].encode(),
    }
    with unit_of_work(clean_db) as session:
        for name, body in bodies.items():
            store_rejected(session, body, reason=f"{name}: not an event", routing_key="x\x1b[31m")
        session.commit()
    return bodies


def test_recon_audit_rejected_masks_bounds_and_escapes(workers, rejected_rows):
    for fmt in ("json", "table", "csv"):
        result = subprocess.run(
            [RECON, "audit", "rejected", "--format", fmt], env=workers.env,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert leaked(result.stdout) == [], fmt
        assert [c for c in CONTROL if c in result.stdout] == [], fmt
    rows = json.loads(
        subprocess.run(
            [RECON, "audit", "rejected", "--format", "json"],
            env=workers.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    )
    assert len(rows) == 3
    assert all(len(row["excerpt"]) <= 200 for row in rows)
    page = web_page(workers, "/rejected")
    assert page.status_code == 200
    assert leaked(page.get_data(as_text=True)) == []


def test_log_lines_mask_credentials_however_their_keys_are_spelt():
    from worker.observe.logging import configure_logging

    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        structlog.get_logger("test").warning(
            "hostile.message",
            headers={key: secret for key, secret in SECRETS.items()},
            body=hostile_body().decode(),
            note=f"retrying with Authorization: Bearer {SECRETS['authorization']}",
        )
        logging.getLogger("celery.test").warning("header X-Api-Key=%s", SECRETS["X-Api-Key"])
    finally:
        configure_logging("INFO")
    output = stream.getvalue()
    assert "hostile.message" in output
    assert leaked(output) == []


WORDS = ["api key", "secret", "token", "password", "passwd", "authorization", "cookie",
         "private key", "access key", "credential"]  # fmt: skip


@st.composite
def credential_keys(draw: st.DrawFn) -> str:
    """A credential word spelt any way: any case, any separator, a prefix and a suffix."""
    word = draw(st.sampled_from(WORDS))
    separator = draw(st.sampled_from(["", " ", "-", "_", "."]))
    spelt = separator.join(word.split(" "))
    spelt = "".join(c.upper() if draw(st.booleans()) else c for c in spelt)
    prefix = draw(st.sampled_from(["", "x-", "client_", "X-Vendor-", "my"]))
    suffix = draw(st.sampled_from(["", "s", "_value", "-Header", "Id"]))
    return prefix + spelt + suffix


@given(
    key=credential_keys(),
    secret=st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=10, max_size=24),
    form=st.sampled_from(["json", "nested", "header", "text", "query", "xml"]),
)
@examples(max_examples=300, deadline=None)
def test_no_spelling_of_a_credential_key_lets_its_value_through(key, secret, form):
    from worker.observe.masking import redact, shown, shown_excerpt

    if form == "json":
        seen = shown_excerpt(json.dumps({"event_id": "e", key: secret}).encode(), 300)
    elif form == "nested":
        seen = shown_excerpt(json.dumps({"a": [{"b": {key: secret}}]}).encode(), 300)
    elif form == "header":
        seen = json.dumps(redact({"headers": {key: secret}}))
    elif form == "text":
        seen = shown(f"{key}: {secret}")
    elif form == "query":
        seen = shown(f"user=bob&{key}={secret}&x=1")
    else:
        seen = shown_excerpt(f"<r><{key}>{secret}</{key}></r>".encode(), 300)
    assert secret not in seen


_FINITE = st.floats(allow_nan=False, allow_infinity=False)
_JSON_LEAVES = st.none() | st.booleans() | st.integers() | st.text() | _FINITE
_JSON = st.recursive(
    _JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@given(_JSON)
@examples(max_examples=200, deadline=None)
def test_an_excerpt_writes_json_exactly_as_the_standard_library_does(value):
    """The excerpt's own writer (fast: it keeps Decimals exact) writes plain JSON byte for byte
    as ``json.dumps`` does, so an excerpt reads back as what was masked."""
    from worker.observe.masking import _dumps

    expected = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    assert _dumps(value) == expected
