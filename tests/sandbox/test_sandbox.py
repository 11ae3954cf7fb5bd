"""The sandbox itself, over real sockets: the platform behaviours the worker's tests rely on."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from sandbox.config import SandboxConfig
from sandbox.server import Sandbox, start_sandbox
from tests.workers import wait_for

# The design's example: user store.server, password server123, MD5-hashed before encoding.
DOCUMENTED_HEADER = "Basic c3RvcmUuc2VydmVyOjhhMTZhNmI3MDUwNWViMWYxZmY3Y2RjMGNkNTU1OWE3"
AUTH = {"Authorization": DOCUMENTED_HEADER}
COUPON = "/v2/coupon/redeem"
POINTS_UPDATE = "/v2/points/updateRedemption"
POINTS_REDEEM = "/v1.1/points/redeem"


@pytest.fixture(scope="module")
def server() -> Iterator[Sandbox]:
    config = SandboxConfig(
        users={"store.server": "server123"},
        oauth_clients={"recon-key": "recon-secret"},
        rate_limit_per_minute=0,
        seed=7,
    )
    running = start_sandbox(config)
    yield running
    running.stop()


@pytest.fixture
def http(server: Sandbox) -> Iterator[requests.Session]:
    """A keep-alive session against a sandbox with empty state, no faults and no rate limit."""
    session = requests.Session()
    admin(session, server, "reset", {})
    admin(
        session,
        server,
        "config",
        {"rate_limit_per_minute": 0, "rate_window_seconds": 60, "token_ttl_seconds": 3600},
    )
    yield session
    session.close()


def admin(http: requests.Session, server: Sandbox, path: str, body: dict | None = None) -> dict:
    url = f"{server.url}/_admin/{path}"
    answer = http.post(url, json=body, timeout=5) if body is not None else http.get(url, timeout=5)
    answer.raise_for_status()
    return answer.json()


def register_coupon(http: requests.Session, server: Sandbox, redemption_id: int, mobile: str):
    item = {"redemption_id": redemption_id, "customer": {"type": "mobile", "value": mobile}}
    admin(http, server, "coupons", {"redemptions": [item]})


def coupon_update(redemption_id: int, mobile: str) -> dict:
    item = {"redemptionId": redemption_id, "billAmount": 120.5, "transactionNumber": "B-1"}
    return {"redemptions": [item], "user": {"mobile": mobile}}


def test_documented_basic_header_is_accepted_and_every_answer_has_a_request_id(http, server):
    register_coupon(http, server, 101, "919800000001")

    answer = http.put(
        f"{server.url}{COUPON}", json=coupon_update(101, "919800000001"), headers=AUTH
    )

    assert answer.status_code == 200
    assert answer.headers["X-Cap-Requestid"]
    assert answer.json()["entity"]["redemptions"][0]["redemptionStatus"]["code"] == 761
    assert admin(http, server, "coupons/101")["update_count"] == 1


def test_plain_password_is_refused_with_an_xml_401(http, server):
    plain = base64.b64encode(b"store.server:server123").decode()

    answer = http.put(
        f"{server.url}{COUPON}",
        json=coupon_update(1, "919800000001"),
        headers={"Authorization": f"Basic {plain}"},
    )

    assert answer.status_code == 401
    assert answer.headers["Content-Type"].startswith("application/xml")
    assert answer.headers["X-Cap-Requestid"]
    assert answer.text.startswith("<?xml")
    assert "<code>401</code>" in answer.text
    assert admin(http, server, "stats")["by_status"] == {"401": 1}


def test_oauth_token_works_until_its_ttl_runs_out(http, server):
    admin(http, server, "config", {"token_ttl_seconds": 1})
    url = f"{server.url}/v3/oauth/token/generate"
    bad = http.post(url, json={"key": "recon-key", "secret": "wrong"})
    assert bad.status_code == 401

    data = http.post(url, json={"key": "recon-key", "secret": "recon-secret"}).json()["data"]
    headers = {"X-CAP-API-OAUTH-TOKEN": data["accessToken"]}
    assert data["ttlSeconds"] == 1
    fresh = http.put(f"{server.url}{COUPON}", json=coupon_update(5, "9198"), headers=headers)
    time.sleep(1.1)
    stale = http.put(f"{server.url}{COUPON}", json=coupon_update(5, "9198"), headers=headers)

    assert fresh.status_code == 200
    assert fresh.json()["entity"]["failedCount"] == 1  # 510: id 5 was never registered
    assert stale.status_code == 401


def test_redeem_with_a_seen_external_reference_replays_the_answer_and_takes_nothing(http, server):
    admin(http, server, "customers", {"customers": [{"mobile": "919700000001", "balance": "100"}]})
    item = {
        "points_redeemed": "12.5",
        "customer": {"mobile": "919700000001"},
        "external_reference_number": "order-77/redeem",
    }
    url = f"{server.url}{POINTS_REDEEM}?format=json&program_id=973"

    first = http.post(url, json={"root": {"redeem": [item]}}, headers=AUTH).json()
    again = http.post(url, json={"root": {"redeem": [item]}}, headers=AUTH).json()

    assert first == again
    points = first["response"]["responses"]["points"]
    assert points["item_status"]["code"] == 800
    assert points["balance"] == 87.5
    assert admin(http, server, "customers/919700000001")["balance"] == "87.5"
    stats = admin(http, server, "stats")
    assert stats["redeem_requests"] == {"order-77/redeem": 2}
    assert stats["redeem_effects"] == {"order-77/redeem": 1}
    assert admin(http, server, f"points/{points['redemption_id']}")["points"] == "12.5"


def test_all_items_failing_is_http_500_with_the_item_code_as_a_string(http, server):
    item = {"points_redeemed": "1.1111", "customer": {"mobile": "919700000002"}}

    answer = http.post(
        f"{server.url}{POINTS_REDEEM}", json={"root": {"redeem": [item]}}, headers=AUTH
    )

    assert answer.status_code == 500
    body = answer.json()["response"]
    assert body["status"]["code"] == 500
    assert body["responses"]["points"]["item_status"] == {
        "success": "false",
        "code": "878",
        "message": "Invalid decimal precision in points redeemed",
    }


def test_the_whole_window_goes_at_once_and_one_more_is_refused_with_no_effect(http, server):
    admin(http, server, "config", {"rate_limit_per_minute": 3, "rate_window_seconds": 60})
    register_coupon(http, server, 202, "919800000002")
    url = f"{server.url}{COUPON}"

    allowed = [http.put(url, json=coupon_update(202, "919800000002"), headers=AUTH) for _ in "abc"]
    refused = http.put(url, json=coupon_update(202, "919800000002"), headers=AUTH)

    assert [answer.status_code for answer in allowed] == [200, 200, 200]
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-Cap-Requestid"]
    assert admin(http, server, "coupons/202")["update_count"] == 3
    assert admin(http, server, "stats")["throttled"] == 1


def test_the_window_slides_a_slot_frees_when_its_request_is_a_window_old(http, server):
    admin(http, server, "config", {"rate_limit_per_minute": 2, "rate_window_seconds": 1.5})
    register_coupon(http, server, 203, "919800000003")
    url = f"{server.url}{COUPON}"

    def send() -> int:
        return http.put(url, json=coupon_update(203, "919800000003"), headers=AUTH).status_code

    assert [send(), send(), send()] == [200, 200, 429]
    # Poll until the window has moved on: the next request is accepted, and the one after it
    # is refused again (the window holds two requests at most, never three).
    wait_until = time.monotonic() + 30
    while send() != 200:
        assert time.monotonic() < wait_until, "the window never moved on"
        time.sleep(0.1)
    assert admin(http, server, "coupons/203")["update_count"] == 3


def test_an_injected_throttle_refuses_every_request_until_it_ends(http, server):
    register_coupon(http, server, 204, "919800000004")
    url = f"{server.url}{COUPON}"
    admin(http, server, "throttle", {"seconds": 30})

    refused = http.put(url, json=coupon_update(204, "919800000004"), headers=AUTH)

    assert refused.status_code == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 30
    assert admin(http, server, "coupons/204")["update_count"] == 0
    admin(http, server, "reset", {})
    assert http.put(url, json=coupon_update(204, "919800000004"), headers=AUTH).status_code == 200


def test_a_scripted_lost_answer_applies_the_update_then_hangs_up(http, server):
    customer = {"type": "mobile", "value": "919731013853"}
    earlier = {"redemption_id": "Fnpztw", "customer": customer, "points": "10"}
    admin(http, server, "points", {"redemptions": [earlier]})
    admin(http, server, "script", {"path": POINTS_UPDATE, "faults": [{"action": "lost"}]})
    body = {
        "redemptionId": "Fnpztw",
        "billNumber": "txn-79",
        "entity": {
            "type": "CUSTOMER",
            "identifierType": "mobile",
            "identifierValue": customer["value"],
        },
    }

    with pytest.raises(requests.ConnectionError):
        http.put(f"{server.url}{POINTS_UPDATE}", json=body, headers=AUTH, timeout=5)
    retried = http.put(f"{server.url}{POINTS_UPDATE}", json=body, headers=AUTH, timeout=5)

    record = admin(http, server, "points/Fnpztw")
    assert record["metadata"] == {"billNumber": "txn-79"}
    assert record["update_count"] == 2  # the lost call took effect, and so did the retry
    assert retried.json()["billNumber"] == "txn-79"
    assert admin(http, server, "stats")["by_status"] == {"lost": 1, "200": 1}


def test_a_second_request_for_a_busy_customer_gets_521_and_no_effect(http, server):
    register_coupon(http, server, 303, "919800000003")
    admin(http, server, "script", {"path": COUPON, "faults": [{"action": "slow", "seconds": 0.8}]})
    url = f"{server.url}{COUPON}"
    slow_answer: list[requests.Response] = []

    def slow_call() -> None:
        with requests.Session() as other:
            body = coupon_update(303, "919800000003")
            slow_answer.append(other.put(url, json=body, headers=AUTH, timeout=5))

    first = threading.Thread(target=slow_call)
    first.start()
    # The slow call has taken its scripted fault: it holds the customer for the next 0.8 s.
    wait_for(lambda: admin(http, server, "script")["pending"] == {}, timeout=5, interval=0.01)
    overlapping = http.put(url, json=coupon_update(303, "919800000003"), headers=AUTH)
    first.join(timeout=5)

    assert overlapping.status_code == 200
    assert overlapping.json()["errors"][0]["code"] == 521
    assert slow_answer[0].json()["entity"]["status"]["code"] == 761
    assert admin(http, server, "coupons/303")["update_count"] == 1
    assert admin(http, server, "stats")["overlaps_521"] == 1
