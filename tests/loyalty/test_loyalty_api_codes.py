"""Every documented code of the four vendor pages, produced by the sandbox over real HTTP (or by
our own rules, with nothing sent) and recognised by the client."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import structlog

from worker.loyalty import (
    CouponUpdate,
    Customer,
    LocalRejection,
    LoyaltyClient,
    Rejected,
)
from worker.loyalty.points import REDEEM_PATH, UPDATE_PATH, decide_points_update, decide_redeem
from worker.settings import load_settings

MOBILE = "919000000002"
ALICE = Customer("mobile", MOBILE)
VENDOR_CONFIG: dict[str, Any] = {
    "name": "miles",
    "redemptionType": "MILES",
    "actions": [
        {
            "apiUrl": "https://vendor.example/reward/issue",
            "apiBody": '{"root": {"coupon": [{"customer": {"mobile": "${mobile}"}}]}}',
            "name": "issue",
            "execOrder": 1,
            "apiType": "POST",
            "retryAction": False,
            "actionId": 20811,
            "enabled": True,
            "apiHeaders": {"Authorization": "Basic VkVORE9SLVNFQ1JFVA==", "X-Api-Key": "vk-991"},
            "contextKeys": {"voucher": "response.coupon.code"},
        }
    ],
    "responseKeys": ["voucher"],
    "vendorId": "124",
    "enabled": True,
}


@pytest.fixture
def client(sandbox: Any) -> Iterator[LoyaltyClient]:
    settings = load_settings(
        {
            "LOYALTY_API_URL": sandbox.url,
            "LOYALTY_API_USERNAME": "store.server",
            "LOYALTY_API_PASSWORD": "server123",
        }
    )
    with LoyaltyClient.from_settings(settings) as loyalty:
        yield loyalty


def coupon(redemption_id: int, amount: str = "12.10") -> CouponUpdate:
    return CouponUpdate(redemption_id, Decimal(amount), "BILL-7", bill_id=7007)


def entity(kind: str = "CUSTOMER") -> dict[str, str]:
    return {"type": kind, "identifierType": "mobile", "identifierValue": MOBILE}


# --- seed 003: PUT /v2/coupon/redeem ------------------------------------------------------------


def test_a_known_coupon_is_updated_with_761(sandbox: Any, client: LoyaltyClient) -> None:
    sandbox.register_coupon(2001, MOBILE)
    result = client.coupons.update_redemptions(customer=ALICE, items=[coupon(2001)])
    assert [(i.redemption_id, i.succeeded, i.code) for i in result.items] == [(2001, True, 761)]
    assert (result.entity_code, result.partial, result.outcome) == (761, False, "succeeded")
    assert sandbox.coupon(2001)["metadata"]["transactionNumber"] == "BILL-7"


def test_an_invalid_coupon_id_is_failed_with_510_and_nothing_raises(
    sandbox: Any, client: LoyaltyClient
) -> None:
    result = client.coupons.update_redemptions(customer=ALICE, items=[coupon(2999)])
    assert [(i.succeeded, i.code) for i in result.items] == [(False, 510)]
    assert result.entity_code == 510
    assert result.outcome == "failed"


def test_invalid_coupon_id_is_failed_with_510_and_batch_is_762(
    sandbox: Any, client: LoyaltyClient
) -> None:
    sandbox.register_coupon(2001, MOBILE)
    result = client.coupons.update_redemptions(customer=ALICE, items=[coupon(2001), coupon(2999)])
    assert {i.redemption_id: i.code for i in result.items} == {2001: 761, 2999: 510}
    invalid = result.item(2999)
    assert invalid is not None
    assert not invalid.succeeded
    assert (result.entity_code, result.partial, result.outcome) == (762, True, "partial")
    assert [i.redemption_id for i in result.failed_items] == [2999]


def test_bill_amount_goes_out_as_the_exact_decimal_number(
    sandbox: Any, client: LoyaltyClient
) -> None:
    sandbox.register_coupon(2001, MOBILE)
    item = CouponUpdate(2001, Decimal("1234567890.10"), "BILL-7", custom_fields={"till": "3"})
    result = client.coupons.update_redemptions(customer=ALICE, items=[item])
    assert '"billAmount":1234567890.10' in result.exchange.request_excerpt
    sent = sandbox.requests(path="/v2/coupon/redeem")[0]["body"]
    assert sent["user"] == {"mobile": MOBILE}
    assert "billId" not in sent["redemptions"][0]
    assert sent["redemptions"][0]["customFields"] == {"till": "3"}


# --- seeds 000/001: PUT /v2/points/updateRedemption ---------------------------------------------


def test_a_points_update_without_errors_succeeds(sandbox: Any, client: LoyaltyClient) -> None:
    sandbox.register_points("P-100", MOBILE)
    result = client.points.update_redemption(
        entity=ALICE,
        redemption_id="P-100",
        bill_number="BILL-7",
        bill_id=7007,
        purpose="attach bill",
        custom_fields={"till": "3"},
    )
    assert result.redemption_id == "P-100"
    assert result.bill_number == "BILL-7"
    assert result.exchange.http_status == 200
    metadata = sandbox.points("P-100")["metadata"]
    assert metadata["billNumber"] == "BILL-7"
    assert metadata["billId"] == 7007


def test_a_points_redemption_can_be_named_by_its_external_reference_number(
    sandbox: Any, client: LoyaltyClient
) -> None:
    sandbox.register_points(None, MOBILE, external_reference_number="order-5/redeem")
    client.points.update_redemption(
        entity=ALICE, external_reference_number="order-5/redeem", bill_number="BILL-5"
    )
    sent = sandbox.requests(path=UPDATE_PATH)[0]["body"]
    assert sent["externalReferenceNumber"] == "order-5/redeem"
    assert "redemptionId" not in sent
    assert sent["entity"] == entity()


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        ({"redemption_id": "P-100"}, 748),
        ({"redemption_id": "P-100", "external_reference_number": "E", "bill_number": "B"}, 749),
        ({"bill_number": "B"}, 749),
        ({"redemption_id": "P-100", "bill_number": "B", "entity": Customer("mobile", " ")}, 1219),
        ({"redemption_id": "P-100", "bill_id": 10**19}, 400),
        ({"redemption_id": "P-100", "purpose": "p" * 256}, 400),
    ],
    ids=["748", "749-both", "749-neither", "1219", "bill-id", "purpose"],
)
def test_points_updates_the_platform_would_refuse_are_never_sent(
    sandbox: Any, client: LoyaltyClient, arguments: dict[str, Any], code: int
) -> None:
    arguments.setdefault("entity", ALICE)
    with structlog.testing.capture_logs() as logs, pytest.raises(LocalRejection) as refused:
        client.points.update_redemption(**arguments)
    assert refused.value.code == code
    assert refused.value.exchange is None
    assert sandbox.stats()["total"] == 0
    assert logs == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"redemptionId": "P-100", "entity": entity()}, 748),
        (
            {
                "redemptionId": "P-100",
                "externalReferenceNumber": "E",
                "billNumber": "B",
                "entity": entity(),
            },
            749,
        ),
        ({"redemptionId": "P-100", "billNumber": "B"}, 1219),
        ({"redemptionId": "P-100", "billNumber": "B", "entity": entity("GROUP")}, 1212),
        ({"redemptionId": "P-404", "billNumber": "B", "entity": entity()}, 8015),
    ],
    ids=["748", "749", "1219", "1212", "8015"],
)
def test_the_platforms_own_v2_errors_with_http_200_are_rejected_with_their_code(
    sandbox: Any, client: LoyaltyClient, body: dict[str, Any], code: int
) -> None:
    # The public method never sends these bodies (it refuses locally, or always says CUSTOMER),
    # so they go through the same call path with the same decision, by hand.
    sandbox.register_points("P-100", MOBILE)
    with pytest.raises(Rejected) as refused:
        client.http.call("PUT", UPDATE_PATH, json=body, decide=decide_points_update)
    assert refused.value.code == code
    assert refused.value.exchange is not None
    assert refused.value.exchange.http_status == 200


def test_a_reversed_redemption_is_rejected_with_750(sandbox: Any, client: LoyaltyClient) -> None:
    sandbox.register_points("P-100", MOBILE, state="reversed")
    with pytest.raises(Rejected) as refused:
        client.points.update_redemption(entity=ALICE, redemption_id="P-100", bill_number="B")
    assert refused.value.code == 750


def test_an_unknown_redemption_id_is_rejected_with_8015(
    sandbox: Any, client: LoyaltyClient
) -> None:
    with pytest.raises(Rejected) as refused:
        client.points.update_redemption(entity=ALICE, redemption_id="P-404", bill_number="B")
    assert refused.value.code == 8015
    assert "8015" in str(refused.value)
    assert refused.value.exchange is not None
    assert str(refused.value.exchange.request_id) in str(refused.value)


# --- seed 002: POST /v1.1/points/redeem ---------------------------------------------------------


def test_redeeming_points_succeeds_with_800_and_a_redemption_id(
    sandbox: Any, client: LoyaltyClient
) -> None:
    result = client.points.redeem(
        mobile=MOBILE,
        points=Decimal("12.500"),
        external_reference_number="order-8/redeem",
        transaction_number="BILL-8",
        notes="web shop",
        custom_fields={"channel": "web"},
        program_id="973",
    )
    assert result.code == 800
    assert result.redemption_id
    assert result.points_redeemed == Decimal("12.5")
    assert result.balance is not None
    assert result.external_reference_number == "order-8/redeem"
    sent = sandbox.requests(path=REDEEM_PATH)[0]
    assert sent["query"] == {"format": "json", "program_id": "973", "skip_validation": "false"}
    item = sent["body"]["root"]["redeem"][0]
    assert item["custom_fields"] == {"field": [{"name": "channel", "value": "web"}]}
    assert item["external_reference_number"] == "order-8/redeem"


def test_a_repeated_reference_is_redeemed_once(sandbox: Any, client: LoyaltyClient) -> None:
    first, again = (
        client.points.redeem(mobile=MOBILE, points=Decimal(3), external_reference_number="r-1")
        for _ in range(2)
    )
    assert first.redemption_id == again.redemption_id
    assert sandbox.stats()["redeem_effects"] == {"r-1": 1}


@pytest.mark.parametrize(
    ("points", "code"),
    [(Decimal("1.2345"), 878), (Decimal("0"), 801), (Decimal("-4"), 801)],
)
def test_points_the_platform_would_refuse_are_never_sent(
    sandbox: Any, client: LoyaltyClient, points: Decimal, code: int
) -> None:
    with pytest.raises(LocalRejection) as refused:
        client.points.redeem(mobile=MOBILE, points=points, external_reference_number="r-2")
    assert refused.value.code == code
    assert sandbox.stats()["total"] == 0


@pytest.mark.parametrize(
    ("points", "params", "code"),
    [
        (Decimal("1.2345"), {}, 878),
        (Decimal("-4"), {}, 801),
        (Decimal("1"), {"user_group2_id": "no-such-group"}, 1632),
    ],
    ids=["878", "801", "1632"],
)
def test_an_http_500_v11_body_is_decided_by_its_item_code_as_permanent(
    sandbox: Any, client: LoyaltyClient, points: Decimal, params: dict[str, str], code: int
) -> None:
    item = {
        "points_redeemed": points,
        "customer": {"mobile": MOBILE},
        "external_reference_number": f"raw-{code}",
    }
    exchange, body = client.http._request(
        "POST", REDEEM_PATH, json={"root": {"redeem": [item]}}, params={"format": "json", **params}
    )
    assert exchange.http_status == 500
    with pytest.raises(Rejected) as refused:
        decide_redeem(exchange, body)
    assert refused.value.code == code
    assert not isinstance(refused.value, LocalRejection)


# --- seed 004: vendor redemption configuration --------------------------------------------------


def test_a_vendor_configuration_update_succeeds_with_5016_without_leaking_api_headers(
    sandbox: Any, client: LoyaltyClient
) -> None:
    with structlog.testing.capture_logs() as logs:
        result = client.vendor.update_vendor_redemption(
            redemption_id=25772, brand_id=61, config=VENDOR_CONFIG
        )
    assert (result.code, result.redemption_id) == (5016, 25772)
    assert result.message
    recorded = result.exchange.request_excerpt + result.exchange.response_excerpt + repr(logs)
    for secret in ("VkVORE9SLVNFQ1JFVA==", "vk-991"):
        assert secret not in recorded
    assert '"apiHeaders":{"Authorization":"***","X-Api-Key":"***"}' in recorded
    # The platform itself gets the real headers: only what we record is redacted.
    sent = sandbox.requests(path=result.exchange.path)[0]["body"]
    assert sent["actions"][0]["apiHeaders"]["X-Api-Key"] == "vk-991"


def test_a_refused_vendor_configuration_is_rejected_with_the_platforms_code(
    sandbox: Any, client: LoyaltyClient
) -> None:
    config = {key: value for key, value in VENDOR_CONFIG.items() if key != "redemptionType"}
    with pytest.raises(Rejected) as refused:
        client.vendor.update_vendor_redemption(redemption_id=25772, brand_id=61, config=config)
    # The platform's page documents only the success code (5016); the sandbox's refusal codes
    # are its own, listed in sandbox/README.md: 9402 is a missing or unknown redemptionType.
    assert refused.value.code == 9402
    assert refused.value.exchange is not None
    assert refused.value.exchange.http_status == 400
