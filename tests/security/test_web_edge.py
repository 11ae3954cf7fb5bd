"""The audit page at the internet's edge (issue 13, deliverable 5), through Flask's test client.

Each test is a finding that was reproduced against the page before it was fixed. The real
server (`recon web` from the installed wheel, over a socket) is in test_web_server.py.
"""

from __future__ import annotations

import datetime as dt
import re
from http.cookies import SimpleCookie
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from models.session import build_engine
from worker.ops import migrate
from worker.settings import load_settings
from worker.web import create_app

TOKEN = "edge-token-7d2b"
HTML = {"Accept": "text/html"}


def client_for(url: str, *, token: str | None = TOKEN, **env: str):
    settings = load_settings(
        {
            "RECON_DATABASE_URL": url,
            "RECON_BROKER_URL": "amqp://guest:guest@127.0.0.1:9//",
            **env,
        }
    )
    return create_app(settings, token=token).test_client()


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('edge') / 'recon.sqlite3'}"
    migrate.upgrade(url)
    return url


def sign_in(client, *, token: str = TOKEN, next_: str = "/", address: str = "127.0.0.1"):
    return client.post(
        "/login",
        data={"token": token, "next": next_},
        environ_base={"REMOTE_ADDR": address},
    )


def session_cookie(response) -> tuple[str, str]:
    """(name, value) of the cookie a response sets."""
    [header] = response.headers.getlist("Set-Cookie")
    jar = SimpleCookie()
    jar.load(header)
    [(name, morsel)] = jar.items()
    return name, morsel.value


# --- the `next` target after sign-in -------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r\n/evil.example",
        "\t//evil.example",
        "//evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "/%0a/evil.example",
        "http:/\t/evil.example",
        " //evil.example",
        "/\x00/evil.example",
    ],
)
def test_sign_in_never_sends_the_browser_to_another_site(sqlite_url, target):
    client = client_for(sqlite_url)
    answer = sign_in(client, next_=target)
    assert answer.status_code == 302
    location = answer.headers["Location"]
    # As a browser reads it: it strips tabs and newlines, then resolves against our origin.
    parsed = urlsplit(location)
    assert parsed.scheme == ""
    assert parsed.netloc == ""
    assert location.startswith("/")
    assert not location.startswith(("//", "/\\"))
    assert not re.search(r"[\x00-\x20\\]", location)


def test_sign_in_keeps_a_next_target_on_this_site(sqlite_url):
    client = client_for(sqlite_url)
    answer = sign_in(client, next_="/failures?since=2026-01-01&size=20")
    assert answer.headers["Location"] == "/failures?since=2026-01-01&size=20"


# --- parameters --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/failures?size=²",
        "/unknown?page=²",
        "/unknown?size=٣",
        "/unmatched?hours=²",
        "/unmatched?page=¹",
        "/failures?before=2026-01-01T00:00:00%2B00:00_²",
        "/operator-log?before=2026-01-01T00:00:00%2B00:00_²",
        "/failures?since=%00",
        "/order?ref=%00",
        "/search?q=a%00b",
        "/customer?value=x&size=%EF%BC%95",
        "/failures?size=9999999999999999999999",
    ],
)
def test_every_parameter_error_is_a_400_with_one_line(sqlite_url, path):
    client = client_for(sqlite_url, token=None)
    answer = client.get(path, headers=HTML)
    assert answer.status_code == 400, path
    message = re.search(r'<p class="problem">(.*?)</p>', answer.get_data(as_text=True), re.S)
    assert message is not None
    assert "\n" not in message.group(1).strip()


PARAMETERS = ("size", "page", "hours", "before", "since", "until", "q", "ref", "number", "id",
              "value")  # fmt: skip
PATHS = ("/", "/search", "/order", "/bill", "/redemption", "/customer", "/failures", "/unknown",
         "/unmatched", "/rejected", "/operator-log")  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(PATHS),
    params=st.dictionaries(st.sampled_from(PARAMETERS), st.text(max_size=40), max_size=4),
)
def test_no_parameter_makes_a_page_fail(sqlite_url, path, params):
    client = client_for(sqlite_url, token=None)
    answer = client.get(path, query_string=params, headers=HTML)
    assert answer.status_code in (200, 302, 400, 404), (path, params)


# --- tokens and the session cookie -------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer t\xf6ken"},
        {"Authorization": "Bearer \xff\xfe"},
        {"Cookie": "recon_web=\xe9t\xe9"},
        {"Cookie": "session=\xe9t\xe9"},
    ],
)
def test_a_token_or_cookie_of_any_bytes_is_refused_not_a_crash(sqlite_url, headers):
    client = client_for(sqlite_url)
    assert client.get("/summary", headers=headers).status_code == 401


def test_a_sign_in_token_of_any_bytes_is_refused_not_a_crash(sqlite_url):
    client = client_for(sqlite_url, token="t\xf6ken-\u00e9")
    assert sign_in(client, token="t\xf6ken").status_code == 401
    assert sign_in(client, token="t\xf6ken-\u00e9").status_code == 302


def test_the_session_cookie_is_signed_expires_and_sign_out_revokes_it(sqlite_url):
    browser = client_for(sqlite_url)
    signed_in = sign_in(browser)
    header = signed_in.headers["Set-Cookie"]
    assert "HttpOnly" in header
    assert "SameSite=Strict" in header
    assert "Expires=" in header
    name, value = session_cookie(signed_in)
    assert TOKEN not in value
    assert browser.get("/summary").status_code == 200

    # Someone who copied the cookie (a shared machine, a log, a proxy) gets in...
    app = browser.application
    thief = app.test_client()
    thief.set_cookie(name, value)
    assert thief.get("/summary").status_code == 200
    # ...until the person signs out: the cookie is dead everywhere, not only in the browser.
    browser.post("/logout")
    assert browser.get("/summary").status_code == 401
    assert thief.get("/summary").status_code == 401
    # A forged or tampered cookie is worth nothing.
    forger = app.test_client()
    forger.set_cookie(name, value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
    assert forger.get("/summary").status_code == 401


def test_the_session_cookie_is_secure_when_the_settings_say_so(sqlite_url):
    plain = sign_in(client_for(sqlite_url))
    assert "Secure" not in plain.headers["Set-Cookie"]
    secure = sign_in(client_for(sqlite_url, RECON_WEB_SECURE_COOKIES="true"))
    assert "Secure" in secure.headers["Set-Cookie"]


def test_the_session_cookie_is_secure_behind_a_trusted_tls_proxy_only(sqlite_url):
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    proxied = client_for(sqlite_url, RECON_WEB_TRUSTED_PROXIES="1")
    answer = proxied.post("/login", data={"token": TOKEN, "next": "/"}, headers=forwarded)
    assert "Secure" in answer.headers["Set-Cookie"]
    # Without a trusted proxy the header is anyone's to send: it changes nothing.
    direct = client_for(sqlite_url)
    answer = direct.post("/login", data={"token": TOKEN, "next": "/"}, headers=forwarded)
    assert "Secure" not in answer.headers["Set-Cookie"]


# --- sign-in attempts ----------------------------------------------------------------------


def test_sign_in_attempts_are_limited_per_client_address(sqlite_url):
    client = client_for(sqlite_url)
    answers = [sign_in(client, token=f"guess-{n}", address="198.51.100.7") for n in range(12)]
    assert {a.status_code for a in answers[:5]} == {401}
    assert answers[-1].status_code == 429
    assert "Retry-After" in answers[-1].headers
    # Even the right token waits: the limit is on attempts, not on failures shown.
    assert sign_in(client, address="198.51.100.7").status_code == 429
    # Another address is not held back by the first one's guesses.
    assert sign_in(client, address="198.51.100.8").status_code == 302


def test_a_forwarded_address_counts_only_behind_a_trusted_proxy(sqlite_url):
    client = client_for(sqlite_url)
    for n in range(12):
        # Not behind a proxy: a made-up X-Forwarded-For must not dodge the limit.
        client.post(
            "/login",
            data={"token": f"guess-{n}"},
            headers={"X-Forwarded-For": f"192.0.2.{n}"},
            environ_base={"REMOTE_ADDR": "198.51.100.9"},
        )
    assert sign_in(client, address="198.51.100.9").status_code == 429


# --- the database session ------------------------------------------------------------------


def test_the_pages_session_on_sqlite_is_read_only(sqlite_url):
    from worker.web import queries

    app = create_app(load_settings({"RECON_DATABASE_URL": sqlite_url}))
    with app.test_request_context("/"):
        session = queries.db()
        with pytest.raises(DBAPIError, match=r"readonly|read-only|query_only"):
            session.execute(
                text(
                    "INSERT INTO operator_log (at, operator, action, reason, target) "
                    "VALUES (:at, 'mallory', 'dead.purge', 'x', 'y')"
                ),
                {"at": dt.datetime.now(dt.UTC).isoformat()},
            )
        queries.close_session()
    engine = build_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM operator_log")).scalar_one() == 0
    engine.dispose()


def test_the_pages_session_on_postgresql_is_read_only_and_bounded(pg_url, clean_db):
    from worker.web import queries

    app = create_app(load_settings({"RECON_DATABASE_URL": pg_url}))
    with app.test_request_context("/"):
        session = queries.db()
        assert session.execute(text("SHOW statement_timeout")).scalar_one() == "5s"
        with pytest.raises(DBAPIError, match="read-only transaction"):
            session.execute(
                text(
                    "INSERT INTO operator_log (at, operator, action, reason, target) "
                    "VALUES (now(), 'mallory', 'dead.purge', 'x', 'y')"
                )
            )
        queries.close_session()
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM operator_log")).scalar_one() == 0
