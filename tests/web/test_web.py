"""The audit page over HTTP (Flask's test client) on a seeded PostgreSQL database, and on SQLite."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal

import pytest
from click.testing import CliRunner
from sqlalchemy.orm import Session

from models.events import InboxEvent
from models.session import build_engine, engine_for
from tests.factories.outcomes import make_outcome
from tests.factories.redemptions import make_redeem_request, make_redemption
from tests.factories.transactions import make_transaction
from worker.cli import audit as audit_cli
from worker.cli import cli
from worker.ops import migrate
from worker.settings import load_settings
from worker.web import create_app

HTML = {"Accept": "text/html"}
PAGES = (
    "/", "/summary", "/search?q=nothing-here", "/failures", "/unknown", "/unmatched",
    "/rejected", "/dead", "/operator-log",
)  # fmt: skip


def app_for(url: str, *, token: str | None = None, **env: str):
    settings = load_settings(
        {
            "RECON_DATABASE_URL": url,
            "LOYALTY_API_USERNAME": "till.user",
            "LOYALTY_API_PASSWORD": "till-password-xyz",
            # Nothing listens on port 9: the dead-letter page must say so, and nothing more.
            "RECON_BROKER_URL": "amqp://guest:broker-pass-xyz@127.0.0.1:9//",
            **env,
        }
    )
    app = create_app(settings, token=token)
    app.testing = True
    return app.test_client()


def text_of(response) -> str:
    return response.get_data(as_text=True)


def seed_order(session: Session, now: dt.datetime) -> None:
    bill = make_transaction(
        session,
        order_ref="WEB-1",
        bill_number="B-WEB-1",
        bill_id=4242,
        bill_amount=Decimal("99.90"),
        customer_value="919811112222",
        listed=[("coupon", "11"), ("coupon", "12"), ("coupon", "13")],
    )
    for number in ("11", "12", "13"):
        make_redemption(
            session, redemption_id=number, order_ref="WEB-1", transaction_id=bill.id,
            customer_value="919811112222", state="failed" if number == "13" else "succeeded",
        )  # fmt: skip
    common = {
        "order_ref": "WEB-1", "bill_number": "B-WEB-1", "bill_id": 4242,
        "bill_amount": Decimal("99.90"), "customer": "919811112222", "at": now,
    }  # fmt: skip
    make_outcome(session, redemption_id="11", code=761, request_id="req-aaa", **common)
    make_outcome(session, redemption_id="12", code=761, request_id="req-aaa", **common)
    make_outcome(
        session, redemption_id="13", code=510, status="failed", request_id="req-aaa",
        message="Invalid Redemption ids present", **common,
    )  # fmt: skip
    make_outcome(session, redemption_id=None, code=762, message="partial", **common)
    session.commit()


@pytest.fixture
def page(pg_url, clean_db):
    client = app_for(pg_url)
    yield client
    engine_for(pg_url).dispose()


def test_a_bill_search_shows_every_attempt_the_amounts_and_the_links(page, session):
    seed_order(session, dt.datetime.now(dt.UTC))
    found = page.get("/search?q=B-WEB-1", headers=HTML)
    assert found.status_code == 302
    assert found.headers["Location"].endswith("/bill?number=B-WEB-1")
    bill = text_of(page.get(found.headers["Location"], headers=HTML))
    codes = re.findall(r'<td class="code num">(\d*)</td>', bill)
    assert sorted(codes) == ["510", "761", "761", "762"]
    assert "Invalid Redemption ids present" in bill
    assert "req-aaa" in bill
    assert "99.9000" in bill
    assert "4242" in bill
    assert 'href="/order?ref=WEB-1"' in bill
    assert 'href="/redemption?id=13"' in bill
    order = text_of(page.get("/order?ref=WEB-1", headers=HTML))
    assert 'href="/bill?number=B-WEB-1"' in order
    assert order.count('class="outcome"') == 4
    redemption = text_of(page.get("/redemption?id=13", headers=HTML))
    assert "attached to bill" in redemption
    assert "B-WEB-1" in redemption
    assert 'href="/customer?value=919811112222"' in order
    customer = text_of(page.get("/customer?value=919811112222", headers=HTML))
    assert customer.count('class="outcome"') == 4


def test_summary_counts_the_window_in_a_table_and_an_svg_chart(page, session):
    now = dt.datetime.now(dt.UTC)
    seed_order(session, now)
    make_outcome(session, at=now - dt.timedelta(hours=30), code=761)  # before today
    session.commit()
    summary = text_of(page.get("/", headers=HTML))
    assert '<svg class="chart"' in summary
    assert re.search(r'class="num total">4<', summary)
    assert "coupon · failed · 510" in summary
    since = (now - dt.timedelta(hours=36)).isoformat()
    wider = text_of(page.get("/summary", query_string={"since": since}, headers=HTML))
    assert re.search(r'class="num total">5<', wider)
    too_wide = page.get("/summary?since=2026-01-01&until=2026-01-09", headers=HTML)
    assert too_wide.status_code == 400


def test_pages_escape_what_they_show(page, session):
    make_outcome(
        session, at=dt.datetime.now(dt.UTC), status="failed", code=510,
        message='<script>alert("x")</script>', order_ref="<b>ORD</b>",
    )  # fmt: skip
    session.commit()
    body = text_of(page.get("/failures", headers=HTML))
    assert "&lt;script&gt;alert(" in body
    assert "<script>" not in body
    assert "<b>ORD</b>" not in body
    searched = text_of(page.get("/search?q=%3Cimg%20src%3Dx%3E", headers=HTML))
    assert "&lt;img src=x&gt;" in searched
    assert "<img" not in searched


def test_every_query_is_bounded_and_bad_input_is_one_readable_line(page, session):
    wide = page.get("/failures?since=2026-01-01&until=2026-06-01", headers=HTML)
    assert wide.status_code == 400
    assert "wider than 31 days" in text_of(wide)
    for bad in (
        "/failures?since=yesterday",
        "/failures?before=nonsense",
        "/failures?size=100000",
        "/unknown?page=999",
        "/unmatched?hours=-1",
        "/order",
    ):
        answer = page.get(bad, headers=HTML)
        assert answer.status_code == 400, bad
        assert "Traceback" not in text_of(answer)
    # Input reaches SQL only as a bound value: quotes are just characters of a name.
    injected = page.get("/search?q=%27%20OR%201%3D1%20--", headers=HTML)
    assert injected.status_code == 200
    assert "Nothing found" in text_of(injected)
    assert page.get("/order?ref=' OR '1'='1", headers=HTML).status_code == 404


def test_failures_page_newest_first_by_keyset(page, session):
    start = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=1, microsecond=0)
    for n in range(60):
        make_outcome(
            session, at=start + dt.timedelta(seconds=n), status="gave_up", code=None,
            message=f"gave up #{n:02d}",
        )  # fmt: skip
    session.commit()
    first = text_of(page.get("/failures", headers=HTML))
    shown = re.findall(r"gave up #(\d\d)", first)
    assert shown == [f"{n:02d}" for n in range(59, 9, -1)]
    older = re.search(r'<a rel="next" href="([^"]+)"', first)
    assert older is not None
    second = text_of(page.get(older.group(1).replace("&amp;", "&"), headers=HTML))
    assert re.findall(r"gave up #(\d\d)", second) == [f"{n:02d}" for n in range(9, -1, -1)]
    assert 'rel="next"' not in second


def test_ops_lists_show_unknown_unmatched_and_rejected(page, session):
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    make_redeem_request(session, state="unknown", order_ref="ORD-UNK", event_id="evt-unk")
    make_redemption(session, redemption_id="777", order_ref="ORD-ALONE", created_at=old)
    session.add(
        InboxEvent(
            dedup_key="rejected:1", status="rejected", reason="body is not JSON",
            routing_key="coupon.redeemed", raw_body="not json\x07\x1b[31m <b>x</b>",
        )
    )  # fmt: skip
    session.commit()
    assert "ORD-UNK" in text_of(page.get("/unknown", headers=HTML))
    unmatched = text_of(page.get("/unmatched", headers=HTML))
    assert "ORD-ALONE" in unmatched
    assert "redemption_without_bill" in unmatched
    rejected = text_of(page.get("/rejected", headers=HTML))
    assert "body is not JSON" in rejected
    assert "\\x07" in rejected
    assert "\x07" not in rejected
    assert "\x1b" not in rejected
    assert "&lt;b&gt;x&lt;/b&gt;" in rejected


def test_recon_audit_rejected_lists_reason_routing_key_size_and_a_safe_excerpt(
    pg_url, session, monkeypatch
):
    session.add_all(
        [
            InboxEvent(
                dedup_key="rejected:a", status="rejected", event_id="evt-bad",
                reason="field 'order_ref': missing", routing_key="coupon.redeemed",
                raw_body='{"event_id": "evt-bad", "password": "pw-should-hide"}',
            ),
            InboxEvent(dedup_key="ok:b", status="accepted", event_id="evt-ok", raw_body="{}"),
            InboxEvent(
                dedup_key="rejected:c", status="rejected", reason="old", raw_body="x",
                received_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=3),
            ),
        ]
    )  # fmt: skip
    session.commit()
    monkeypatch.setenv("RECON_DATABASE_URL", pg_url)
    audit_cli.register(cli)
    result = CliRunner().invoke(cli, ["audit", "rejected", "--format", "json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["event_id"] == "evt-bad"
    assert row["routing_key"] == "coupon.redeemed"
    assert row["reason"] == "field 'order_ref': missing"
    assert row["size"] == len('{"event_id": "evt-bad", "password": "pw-should-hide"}')
    assert "evt-bad" in row["excerpt"]
    assert "pw-should-hide" not in row["excerpt"]
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=4)).date().isoformat()
    wider = CliRunner().invoke(cli, ["audit", "rejected", "--since", since, "--format", "csv"])
    assert wider.exit_code == 0
    assert len(wider.stdout.strip().splitlines()) == 3  # header and two rows


def test_the_token_guards_every_page_and_never_shows_up(pg_url, clean_db):
    guarded = app_for(pg_url, token="tok-3f9a1c")
    assert guarded.get("/").status_code == 401
    to_login = guarded.get("/failures", headers=HTML)
    assert to_login.status_code == 302
    assert "/login" in to_login.headers["Location"]
    assert guarded.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get("/", headers={"Authorization": "Bearer tok-3f9a1c"}).status_code == 200
    wrong = guarded.post("/login", data={"token": "nope", "next": "/failures"})
    assert wrong.status_code == 401
    right = guarded.post("/login", data={"token": "tok-3f9a1c", "next": "https://evil.example/"})
    assert right.status_code == 302
    assert right.headers["Location"] == "/"
    sneaky = guarded.post("/login", data={"token": "tok-3f9a1c", "next": "/\\evil.example"})
    assert sneaky.headers["Location"] == "/"
    cookie = right.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "tok-3f9a1c" not in cookie
    for path in PAGES:
        answer = guarded.get(path, headers=HTML)
        assert answer.status_code == 200, path
        assert "tok-3f9a1c" not in text_of(answer)
    guarded.post("/logout")
    assert guarded.get("/").status_code == 401


def test_no_credential_reaches_a_page(page, session):
    make_outcome(
        session, at=dt.datetime.now(dt.UTC), status="failed", code=401,
        request_excerpt='{"Authorization": "Basic c2VjcmV0"}',
        response_excerpt='{"apiHeaders": {"X-Vendor-Key": "vendor-key-xyz"}}',
    )  # fmt: skip
    session.commit()
    bodies = [text_of(page.get(path, headers=HTML)) for path in PAGES]
    dead = bodies[PAGES.index("/dead")]
    assert "cannot read the dead-letter queue" in dead
    for body in bodies:
        for secret in (
            "till-password-xyz", "broker-pass-xyz", "c2VjcmV0", "vendor-key-xyz", "Authorization",
        ):  # fmt: skip
            assert secret not in body


def test_the_page_reads_the_embedded_sqlite_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    migrate.upgrade(url)
    engine = build_engine(url)
    with Session(engine) as session:
        seed_order(session, dt.datetime.now(dt.UTC))
        make_redeem_request(session, state="unknown", order_ref="ORD-UNK")
        session.commit()
    client = app_for(url)
    for path in (*PAGES, "/bill?number=B-WEB-1", "/order?ref=WEB-1", "/redemption?id=11",
                 "/customer?value=919811112222"):  # fmt: skip
        assert client.get(path, headers=HTML).status_code == 200, path
    assert "762" in text_of(client.get("/bill?number=B-WEB-1", headers=HTML))
    assert "ORD-UNK" in text_of(client.get("/unknown", headers=HTML))
    engine.dispose()
    engine_for(url).dispose()


def test_the_operator_log_page_shows_who_did_what_and_why(page, session):
    from worker.ops.operator_log import record_action

    record_action(
        session, operator="alice", action="dead.replay", reason="platform <fixed>",
        target="recon.dead", subject="3f2a9c0d1e4b5a69",
        detail={"reason": "rejected", "count": 1, "source_queue": "recon.events",
                "exchange": "orders", "routing_key": "coupon.redeemed", "size": 120},
    )  # fmt: skip
    session.commit()
    body = text_of(page.get("/operator-log", headers=HTML))
    assert "alice" in body
    assert "dead.replay" in body
    assert "platform &lt;fixed&gt;" in body
    assert "3f2a9c0d1e4b5a69" in body
    assert "coupon.redeemed" in body
