"""The loyalty client's transport and credentials, against the sandbox over real sockets:
auth, throttling answers, time-outs, dropped connections, request ids and what reaches the logs."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator, MutableMapping
from decimal import Decimal
from typing import Any

import pytest
import structlog

from worker.loyalty import (
    BasicAuth,
    CouponUpdate,
    Customer,
    LoyaltyClient,
    LoyaltyError,
    LoyaltyHttp,
    OAuthTokens,
    RateLimited,
    Rejected,
    Transient,
    Unauthorized,
    basic_auth_header,
    session_factory,
)
from worker.loyalty.points import REDEEM_PATH
from worker.settings import Settings, SettingsError, load_settings

USER, PASSWORD = "store.server", "server123"
OAUTH_KEY, OAUTH_SECRET = "recon-key", "recon-secret"
MOBILE = "919000000001"
ALICE = Customer("mobile", MOBILE)
COUPON_PATH = "/v2/coupon/redeem"
TOKEN_PATH = "/v3/oauth/token/generate"


def basic_settings(url: str, **env: str) -> Settings:
    values = {
        "LOYALTY_API_URL": url,
        "LOYALTY_API_USERNAME": USER,
        "LOYALTY_API_PASSWORD": PASSWORD,
    }
    return load_settings({**values, **env})


def oauth_settings(url: str, secret: str = OAUTH_SECRET) -> Settings:
    env = {"LOYALTY_API_CLIENT_KEY": OAUTH_KEY, "LOYALTY_API_CLIENT_SECRET": secret}
    return load_settings({"LOYALTY_API_URL": url, **env})


@pytest.fixture
def short_tokens(sandbox: Any) -> Iterator[None]:
    """2-second OAuth tokens for one test (the sandbox's reset keeps its configuration)."""
    sandbox.configure(token_ttl_seconds=2)
    yield
    sandbox.configure(token_ttl_seconds=3600)


@pytest.fixture
def client(sandbox: Any) -> Iterator[LoyaltyClient]:
    with LoyaltyClient.from_settings(basic_settings(sandbox.url)) as loyalty:
        yield loyalty


def update_one_coupon(client: LoyaltyClient, redemption_id: int = 1001) -> Any:
    item = CouponUpdate(redemption_id, Decimal("12.10"), "BILL-1", bill_id=77)
    return client.coupons.update_redemptions(customer=ALICE, items=[item])


def redeem(client: LoyaltyClient, reference: str = "order-1/redeem", mobile: str = MOBILE) -> Any:
    return client.points.redeem(
        mobile=mobile, points=Decimal("5"), external_reference_number=reference
    )


def calls(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line["event"] == "loyalty.call"]


# --- credentials -------------------------------------------------------------------------------


def test_basic_auth_sends_the_documented_header_and_is_accepted(
    sandbox: Any, client: LoyaltyClient
) -> None:
    sandbox.register_coupon(1001, MOBILE)
    result = update_one_coupon(client)
    assert result.all_succeeded
    assert basic_auth_header(USER, PASSWORD).endswith(
        "c3RvcmUuc2VydmVyOjhhMTZhNmI3MDUwNWViMWYxZmY3Y2RjMGNkNTU1OWE3"
    )


def test_a_wrong_password_is_unauthorized_even_with_an_xml_body(sandbox: Any) -> None:
    settings = basic_settings(sandbox.url, LOYALTY_API_PASSWORD="wrong")
    with LoyaltyClient.from_settings(settings) as loyalty, pytest.raises(Unauthorized) as refused:
        update_one_coupon(loyalty)
    exchange = refused.value.exchange
    assert exchange is not None
    assert exchange.http_status == 401
    assert exchange.response_excerpt.startswith("<?xml")
    assert exchange.request_id


def test_oauth_fetches_one_token_and_reuses_it(sandbox: Any) -> None:
    sandbox.register_coupon(1001, MOBILE)
    with LoyaltyClient.from_settings(oauth_settings(sandbox.url)) as loyalty:
        for _ in range(3):
            assert update_one_coupon(loyalty).all_succeeded
    by_endpoint = sandbox.stats()["by_endpoint"]
    assert by_endpoint[f"POST {TOKEN_PATH}"] == 1
    assert by_endpoint[f"PUT {COUPON_PATH}"] == 3


@pytest.mark.usefixtures("short_tokens")
def test_oauth_renews_the_token_before_it_runs_out(sandbox: Any) -> None:
    sandbox.register_coupon(1001, MOBILE)
    with LoyaltyClient.from_settings(oauth_settings(sandbox.url)) as loyalty:
        update_one_coupon(loyalty)
        update_one_coupon(loyalty)
        assert sandbox.stats()["by_endpoint"][f"POST {TOKEN_PATH}"] == 1
        # A 2 s token is renewed once half of it is gone, so this call never meets an expired one.
        time.sleep(1.1)
        assert update_one_coupon(loyalty).all_succeeded
    assert sandbox.stats()["by_endpoint"][f"POST {TOKEN_PATH}"] == 2
    assert sandbox.stats()["by_status"].get("401") is None


def test_oauth_renewal_follows_the_clock_not_the_call_count(sandbox: Any) -> None:
    sandbox.configure(token_ttl_seconds=3600)
    now = [1000.0]
    with LoyaltyHttp(base_url=sandbox.url, auth=None) as token_http:
        tokens = OAuthTokens(token_http, key=OAUTH_KEY, secret=OAUTH_SECRET, clock=lambda: now[0])
        first = tokens.token()
        now[0] += 3600 - 361  # 10 % of the 3600 s ttl is left: still the same token
        assert tokens.token() == first
        now[0] += 2
        assert tokens.token() != first
    assert sandbox.stats()["by_endpoint"][f"POST {TOKEN_PATH}"] == 2


def test_a_wrong_oauth_secret_is_unauthorized(sandbox: Any) -> None:
    settings = oauth_settings(sandbox.url, secret="not-the-secret")
    with LoyaltyClient.from_settings(settings) as loyalty, pytest.raises(Unauthorized):
        update_one_coupon(loyalty)
    assert sandbox.stats()["by_endpoint"].get(f"PUT {COUPON_PATH}") is None


# --- throttling and server trouble ------------------------------------------------------------


def test_429_is_rate_limited_with_the_servers_retry_after(
    sandbox: Any, client: LoyaltyClient
) -> None:
    sandbox.register_coupon(1001, MOBILE)
    sandbox.script(COUPON_PATH, {"status": 429, "retry_after": 2})
    with pytest.raises(RateLimited) as throttled:
        update_one_coupon(client)
    assert throttled.value.retry_after == 2.0
    assert throttled.value.ambiguous is False
    assert update_one_coupon(client).all_succeeded  # the script was used up


def test_503_without_an_envelope_is_transient_and_ambiguous(
    sandbox: Any, client: LoyaltyClient
) -> None:
    sandbox.script(COUPON_PATH, {"status": 503})
    with pytest.raises(Transient) as failed:
        update_one_coupon(client)
    assert failed.value.ambiguous is True
    assert failed.value.exchange is not None
    assert failed.value.exchange.http_status == 503


@pytest.mark.parametrize("code", [461, 521])
@pytest.mark.parametrize(
    ("path", "call"),
    [
        (COUPON_PATH, update_one_coupon),
        (
            "/v2/points/updateRedemption",
            lambda c: c.points.update_redemption(entity=ALICE, redemption_id="P1", bill_number="B"),
        ),
        (REDEEM_PATH, redeem),
    ],
    ids=["coupon", "points-update", "points-redeem"],
)
def test_busy_and_overlap_codes_are_transient_and_certainly_not_done(
    sandbox: Any, client: LoyaltyClient, path: str, call: Any, code: int
) -> None:
    sandbox.register_coupon(1001, MOBILE)
    sandbox.register_points("P1", MOBILE)
    sandbox.script(path, {"code": code})
    with pytest.raises(Transient) as busy:
        call(client)
    assert (busy.value.code, busy.value.ambiguous) == (code, False)
    assert not isinstance(busy.value, Rejected)


@pytest.mark.parametrize("item_code", [815, 886, 887, 889, 894, 898])
def test_v11_try_again_later_item_codes_are_transient(
    sandbox: Any, client: LoyaltyClient, item_code: int
) -> None:
    sandbox.script(REDEEM_PATH, {"item_code": item_code})
    with pytest.raises(Transient) as later:
        redeem(client)
    assert (later.value.code, later.value.ambiguous) == (item_code, False)


# --- no answer at all ---------------------------------------------------------------------------


def test_a_read_time_out_is_transient_and_ambiguous(sandbox: Any) -> None:
    settings = basic_settings(sandbox.url, LOYALTY_HTTP_TIMEOUT_SECONDS="0.5")
    sandbox.script(REDEEM_PATH, {"action": "slow", "seconds": 1.5})
    started = time.monotonic()
    with LoyaltyClient.from_settings(settings) as loyalty, pytest.raises(Transient) as timed_out:
        # Its own customer: the sandbox holds the customer's lock until the slow answer is done.
        redeem(loyalty, mobile="919000000777")
    assert time.monotonic() - started < 1.4
    assert timed_out.value.ambiguous is True
    assert timed_out.value.exchange is not None
    assert timed_out.value.exchange.http_status is None


@pytest.mark.parametrize("action", ["drop", "lost"])
def test_a_connection_dropped_after_sending_is_transient_and_ambiguous(
    sandbox: Any, client: LoyaltyClient, action: str
) -> None:
    sandbox.script(REDEEM_PATH, {"action": action})
    with pytest.raises(Transient) as dropped:
        redeem(client)
    assert dropped.value.ambiguous is True


def test_a_lost_answer_is_settled_by_retrying_with_the_same_reference(
    sandbox: Any, client: LoyaltyClient
) -> None:
    sandbox.script(REDEEM_PATH, {"action": "lost"})
    with pytest.raises(Transient):
        redeem(client, "order-9/redeem")
    result = redeem(client, "order-9/redeem")
    assert result.code == 800
    assert sandbox.stats()["redeem_effects"] == {"order-9/redeem": 1}


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_a_refused_connection_is_transient_and_certainly_not_done() -> None:
    settings = basic_settings(f"http://127.0.0.1:{_closed_port()}")
    with LoyaltyClient.from_settings(settings) as loyalty, pytest.raises(Transient) as refused:
        redeem(loyalty)
    assert refused.value.ambiguous is False
    assert refused.value.exchange is not None
    assert refused.value.exchange.http_status is None


def test_a_connect_time_out_is_transient_and_certainly_not_done() -> None:
    # A listener that never accepts, its backlog already full: Linux (where this service and its
    # CI run) drops further SYNs, so the handshake never completes.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
            http = LoyaltyHttp(
                base_url=f"http://127.0.0.1:{port}",
                auth=BasicAuth(USER, PASSWORD),
                timeout=(0.3, 1.0),
            )
            with LoyaltyClient(http, owns_session=True) as loyalty, pytest.raises(Transient) as out:
                redeem(loyalty)
        finally:
            for filler in fillers:
                filler.close()
    assert out.value.ambiguous is False
    assert "connect time-out" in out.value.message


# --- what every call leaves behind --------------------------------------------------------------


def _every_kind_of_answer(sandbox: Any, client: LoyaltyClient) -> list[Any]:
    """A result or an error from each area and each failure family."""
    sandbox.register_coupon(1001, MOBILE)
    sandbox.register_points("P1", MOBILE)
    outcomes: list[Any] = [
        update_one_coupon(client),
        client.points.update_redemption(entity=ALICE, redemption_id="P1", bill_number="B"),
        redeem(client),
    ]
    sandbox.script(COUPON_PATH, {"status": 503})
    sandbox.script(REDEEM_PATH, {"item_code": 815})
    for call in (
        update_one_coupon,
        redeem,
        lambda c: c.points.update_redemption(entity=ALICE, redemption_id="NOPE", bill_id=1),
    ):
        with pytest.raises(LoyaltyError) as failed:
            call(client)
        outcomes.append(failed.value)
    return outcomes


def test_every_result_and_error_keeps_the_platforms_request_id(
    sandbox: Any, client: LoyaltyClient
) -> None:
    outcomes = _every_kind_of_answer(sandbox, client)
    seen = {request["request_id"] for request in sandbox.requests()}
    for outcome in outcomes:
        assert outcome.exchange.request_id in seen, outcome


def test_each_call_logs_exactly_one_line_with_its_outcome(
    sandbox: Any, client: LoyaltyClient
) -> None:
    with structlog.testing.capture_logs() as logs:
        _every_kind_of_answer(sandbox, client)
    lines = calls(logs)
    assert len(lines) == 6 == sandbox.stats()["total"]
    assert [line["outcome"] for line in lines] == [
        "succeeded",
        "succeeded",
        "succeeded",
        "ambiguous",
        "transient",
        "rejected",
    ]
    assert [line["code"] for line in lines] == [761, None, 800, None, 815, 8015]
    for line in lines:
        assert set(line) == {
            "event",
            "log_level",
            "method",
            "path",
            "http_status",
            "request_id",
            "code",
            "elapsed_ms",
            "outcome",
        }
        assert line["request_id"]
        assert line["elapsed_ms"] >= 0


def test_the_throttle_runs_before_every_request_including_the_token_request(
    sandbox: Any,
) -> None:
    sandbox.register_coupon(1001, MOBILE)
    waits: list[float] = []
    settings = oauth_settings(sandbox.url)
    with LoyaltyClient.from_settings(settings, throttle=lambda: waits.append(1)) as loyalty:
        update_one_coupon(loyalty)
        update_one_coupon(loyalty)
    assert len(waits) == 3 == sandbox.stats()["total"]


def test_no_credential_reaches_logs_errors_or_excerpts(sandbox: Any) -> None:
    sandbox.register_coupon(1001, MOBILE)
    md5 = hashlib.md5(PASSWORD.encode()).hexdigest()
    header = basic_auth_header(USER, PASSWORD)
    texts: list[str] = []
    with structlog.testing.capture_logs() as logs:
        with LoyaltyClient.from_settings(basic_settings(sandbox.url)) as loyalty:
            texts.append(repr(loyalty.http.auth))
            sandbox.script(COUPON_PATH, {"status": 503})
            with pytest.raises(Transient) as failed:
                update_one_coupon(loyalty)
            texts += [str(failed.value), repr(failed.value), repr(failed.value.exchange)]
        with LoyaltyClient.from_settings(oauth_settings(sandbox.url)) as loyalty:
            result = update_one_coupon(loyalty)
            token = loyalty.http.auth.token()  # type: ignore[union-attr]
            texts += [repr(result), repr(loyalty.http.auth)]
        settings = basic_settings(sandbox.url, LOYALTY_API_PASSWORD="wrong")
        with LoyaltyClient.from_settings(settings) as loyalty, pytest.raises(Unauthorized) as no:
            update_one_coupon(loyalty)
        texts += [str(no.value), repr(no.value.exchange)]
    texts += [repr(line) for line in logs]
    everything = "\n".join(texts)
    assert sandbox.requests(path=TOKEN_PATH), "the OAuth path was exercised"
    for secret in (PASSWORD, md5, header, header.split()[1], OAUTH_SECRET, token):
        assert secret not in everything


def test_the_token_exchange_is_recorded_redacted(sandbox: Any) -> None:
    with (
        structlog.testing.capture_logs() as logs,
        LoyaltyHttp(base_url=sandbox.url, auth=None) as token_http,
    ):
        tokens = OAuthTokens(token_http, key=OAUTH_KEY, secret=OAUTH_SECRET)
        token = tokens.token()
        exchange, _ = token_http._request(
            "POST", TOKEN_PATH, json={"key": OAUTH_KEY, "secret": OAUTH_SECRET}
        )
    assert OAUTH_SECRET not in exchange.request_excerpt
    assert '"secret":"***"' in exchange.request_excerpt
    assert '"accessToken":"***"' in exchange.response_excerpt
    assert token not in repr(logs)


# --- construction -------------------------------------------------------------------------------


def test_the_pooled_session_never_retries_behind_our_back() -> None:
    with session_factory() as session:
        adapter = session.get_adapter("https://eu.api.capillarytech.com/")
        assert adapter.max_retries.total == 0  # type: ignore[attr-defined]
        assert adapter._pool_maxsize == 16  # type: ignore[attr-defined]


def test_building_a_client_without_credentials_fails_readably() -> None:
    settings = load_settings({"LOYALTY_API_URL": "http://127.0.0.1:9"})
    with pytest.raises(SettingsError, match="LOYALTY_API_USERNAME"):
        LoyaltyClient.from_settings(settings)


def test_oauth_is_chosen_when_a_client_key_is_set(sandbox: Any) -> None:
    with LoyaltyClient.from_settings(oauth_settings(sandbox.url)) as loyalty:
        assert isinstance(loyalty.http.auth, OAuthTokens)
    with LoyaltyClient.from_settings(basic_settings(sandbox.url)) as loyalty:
        assert isinstance(loyalty.http.auth, BasicAuth)
