"""Local rules, exact JSON numbers and redaction: what the client decides without the platform."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.loyalty import (
    CouponUpdate,
    Customer,
    LocalRejection,
    RateLimited,
    Rejected,
    Transient,
    basic_auth_header,
    is_transient_code,
    jsoncodec,
)
from worker.loyalty.transport import parse_retry_after
from worker.loyalty.validation import (
    check_bill_id,
    check_coupon_batch,
    check_points,
    check_points_update,
)
from worker.observe.masking import MASK, excerpt, redact, redact_event_dict

# The platform's ids are Java longs; written out here, not imported from the module under test.
JAVA_LONG_MAX = 2**63 - 1
# Our own code for a field rule the platform's pages give no code for (DESIGN.md, metrics' CODES):
# written out too, so a change of it fails here.
FIELD_RULE_CODE = 400
ALICE = Customer("mobile", "919000000001")


def test_basic_header_matches_the_documented_example() -> None:
    assert (
        basic_auth_header("store.server", "server123")
        == "Basic c3RvcmUuc2VydmVyOjhhMTZhNmI3MDUwNWViMWYxZmY3Y2RjMGNkNTU1OWE3"
    )


@pytest.mark.parametrize("code", [461, 521, 815, 886, 887, 889, 894, 898])
def test_design_transient_codes_are_transient(code: int) -> None:
    assert is_transient_code(code)


@pytest.mark.parametrize("code", [None, 200, 500, 510, 748, 750, 800, 801, 878, 8015])
def test_other_codes_are_not_transient(code: int | None) -> None:
    assert not is_transient_code(code)


# --- points precision and sign (seed 002: 878, 801) ---------------------------------------------

places_over_three = st.builds(
    lambda digits, places, negative: Decimal(f"{'-' if negative else ''}{digits}E-{places}"),
    st.integers(min_value=1, max_value=10**12).filter(lambda n: n % 10 != 0),
    st.integers(min_value=4, max_value=12),
    st.booleans(),
)
positive_within_three = st.decimals(
    min_value=Decimal("0.001"), max_value=Decimal("1e9"), places=3, allow_nan=False
)


@given(places_over_three)
def test_any_points_with_more_than_three_places_are_878(points: Decimal) -> None:
    with pytest.raises(LocalRejection) as refused:
        check_points(points)
    assert refused.value.code == 878
    assert refused.value.exchange is None


@given(positive_within_three)
def test_any_positive_points_with_at_most_three_places_pass_unchanged_in_value(
    points: Decimal,
) -> None:
    sent = check_points(points)
    assert sent == points
    assert jsoncodec.loads(jsoncodec.dumps(sent)) == points


@given(st.decimals(max_value=Decimal(0), places=3, allow_nan=False, allow_infinity=False))
def test_any_points_not_above_zero_are_801(points: Decimal) -> None:
    with pytest.raises(LocalRejection) as refused:
        check_points(points)
    assert refused.value.code == 801


@pytest.mark.parametrize(
    ("points", "sent"),
    [(Decimal("1.1000"), "1.1"), (Decimal("100"), "100"), (Decimal("2.500"), "2.5"), (7, "7")],
)
def test_trailing_zeros_are_not_decimal_places(points: Decimal, sent: str) -> None:
    assert jsoncodec.dumps(check_points(points)) == sent


@pytest.mark.parametrize("points", [Decimal("NaN"), Decimal("Infinity"), "5", 1.5, True])
def test_points_that_are_not_finite_decimals_are_801(points: object) -> None:
    with pytest.raises(LocalRejection) as refused:
        check_points(points)  # type: ignore[arg-type]
    assert refused.value.code == 801


# --- bill id, purpose, custom fields, entity ----------------------------------------------------


@given(st.integers(min_value=1, max_value=JAVA_LONG_MAX))
def test_any_java_long_bill_id_passes(bill_id: int) -> None:
    check_bill_id(bill_id)


@pytest.mark.parametrize("bill_id", [0, -1, JAVA_LONG_MAX + 1, 10**19, "123", 12.0, True])
def test_bill_id_outside_a_positive_java_long_is_refused_locally(bill_id: object) -> None:
    with pytest.raises(LocalRejection) as refused:
        check_bill_id(bill_id)
    assert refused.value.code == FIELD_RULE_CODE
    assert "bill_id" in refused.value.message


def _update(**overrides: object) -> None:
    arguments: dict[str, object] = {
        "entity": ALICE,
        "redemption_id": "R1",
        "external_reference_number": None,
        "bill_number": "B1",
        "bill_id": None,
        "purpose": None,
        "custom_fields": None,
    }
    arguments.update(overrides)
    check_points_update(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "code", "words"),
    [
        ({"external_reference_number": "E1"}, 749, "both"),
        ({"redemption_id": None}, 749, "neither"),
        ({"redemption_id": "  "}, 749, "neither"),
        ({"entity": None}, 1219, "customer"),
        ({"entity": Customer("mobile", "")}, 1219, "customer"),
        ({"entity": Customer("phone", "1")}, 1219, "identifier type"),  # type: ignore[arg-type]
        ({"bill_number": None}, 748, "nothing to update"),
        ({"bill_number": "", "custom_fields": {}}, 748, "nothing to update"),
        ({"purpose": "x" * 256}, FIELD_RULE_CODE, "256 characters"),
        ({"custom_fields": {"a": 1}}, FIELD_RULE_CODE, "custom_fields['a']"),
        ({"custom_fields": {"": "x"}}, FIELD_RULE_CODE, "key"),
        ({"bill_id": -3}, FIELD_RULE_CODE, "bill_id"),
    ],
)
def test_points_update_rules_refuse_with_a_readable_reason(
    overrides: dict[str, object], code: int, words: str
) -> None:
    with pytest.raises(LocalRejection) as refused:
        _update(**overrides)
    assert refused.value.code == code
    assert words in refused.value.message


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"purpose": "x" * 255},
        {"bill_number": None, "bill_id": JAVA_LONG_MAX},
        {"custom_fields": {"k": "v"}, "bill_number": None},
    ],
)
def test_points_update_rules_accept_what_the_pages_allow(overrides: dict[str, object]) -> None:
    _update(**overrides)


@pytest.mark.parametrize(
    ("item", "code"),
    [
        (CouponUpdate(0, Decimal("1"), "B1"), 510),
        (CouponUpdate(5, Decimal("-0.01"), "B1"), FIELD_RULE_CODE),
        (CouponUpdate(5, Decimal("NaN"), "B1"), FIELD_RULE_CODE),
        (CouponUpdate(5, Decimal("1"), "B1", bill_id=0), FIELD_RULE_CODE),
        (CouponUpdate(5, Decimal("1"), "B1", custom_fields={"a": 2}), FIELD_RULE_CODE),  # type: ignore[dict-item]
    ],
)
def test_coupon_rules_refuse_the_whole_batch(item: CouponUpdate, code: int) -> None:
    with pytest.raises(LocalRejection) as refused:
        check_coupon_batch(ALICE, [CouponUpdate(4, Decimal("0"), "B1"), item])
    assert refused.value.code == code


def test_an_empty_coupon_batch_is_refused() -> None:
    with pytest.raises(LocalRejection, match="no coupon redemptions"):
        check_coupon_batch(ALICE, [])


# --- exact numbers on the wire -----------------------------------------------------------------


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_any_decimal_goes_out_as_an_exact_json_number(value: Decimal) -> None:
    text = jsoncodec.dumps({"billAmount": value})
    assert '"' not in text.split(":", 1)[1]
    assert jsoncodec.loads(text)["billAmount"] == value


def test_money_keeps_its_written_precision() -> None:
    assert jsoncodec.dumps({"a": Decimal("12.10"), "b": Decimal("1E+2")}) == '{"a":12.10,"b":100}'


def test_a_non_finite_decimal_is_not_json() -> None:
    with pytest.raises(ValueError, match="not a JSON number"):
        jsoncodec.dumps(Decimal("Infinity"))


# --- redaction ---------------------------------------------------------------------------------

sensitive_keys = st.sampled_from(
    ["Authorization", "password", "SECRET", "token", "accessToken", "X-CAP-API-OAUTH-TOKEN", "key"]
)
secrets = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ23456789", min_size=12, max_size=24)


@given(sensitive_keys, secrets, st.integers(min_value=0, max_value=3))
def test_a_sensitive_value_never_survives_an_excerpt(key: str, secret: str, depth: int) -> None:
    body: object = {key: secret, "other": "kept"}
    for _ in range(depth):
        body = {"outer": [body, {"n": 1}]}
    text = excerpt(body)
    assert secret not in text
    assert "kept" in text


def test_every_api_header_value_is_hidden_and_json_strings_are_redacted_inside() -> None:
    config: dict[str, Any] = {
        "actions": [
            {
                "apiHeaders": {"Authorization": "Basic Ymxpc3M6MWY5", "X-Vendor-Key": "vk-123"},
                "apiBody": '{"password": "hunter2", "mobile": "${mobile}"}',
            }
        ]
    }
    cleaned = redact(config)
    action = cleaned["actions"][0]
    assert action["apiHeaders"] == {"Authorization": MASK, "X-Vendor-Key": MASK}
    assert "hunter2" not in action["apiBody"]
    assert "${mobile}" in action["apiBody"]
    assert config["actions"][0]["apiHeaders"]["X-Vendor-Key"] == "vk-123"  # a copy, not in place


def test_text_answers_are_redacted_and_cut_to_the_limit() -> None:
    text = "<r><auth>Basic c3RvcmUuc2VydmVyOjhh</auth>" + "x" * 3000 + "</r>"
    cut = excerpt(text)
    assert len(cut) == 2000
    assert "c3RvcmUuc2VydmVyOjhh" not in cut


def test_the_structlog_processor_redacts_the_event() -> None:
    event = redact_event_dict(None, "info", {"event": "e", "headers": {"authorization": "B x"}})
    assert event == {"event": "e", "headers": {"authorization": MASK}}


# --- errors and Retry-After --------------------------------------------------------------------


def test_errors_survive_pickling_with_their_attributes() -> None:
    for error in (
        Transient("busy", ambiguous=False, code=461),
        RateLimited("slow down", retry_after=2.0),
        Rejected(510, "Invalid Redemption ids present"),
        LocalRejection(878, "too precise"),
    ):
        copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own object)
        assert type(copy) is type(error)
        assert copy.__dict__ == error.__dict__
        assert str(copy) == str(error)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2", 2.0),
        ("0.5", 0.5),
        ("-3", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_read_as_seconds_or_an_http_date(
    header: str | None, seconds: float | None
) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == seconds
