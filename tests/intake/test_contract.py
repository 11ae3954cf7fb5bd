"""The event contract as order systems send it: identifiers as numbers, hostile bytes refused."""

from __future__ import annotations

import json

import pytest

from tests.factories import events
from worker.intake.contract import ContractError, parse_event

JAVA_LONG_MAX = 9_223_372_036_854_775_807  # written out: the platform's bound, not our constant


def _reason(body: bytes) -> str:
    with pytest.raises(ContractError) as caught:
        parse_event(body)
    return caught.value.reason


def _with(event: dict, **changes) -> bytes:
    return json.dumps(event | changes).encode()


@pytest.mark.parametrize(
    ("event", "field", "sent", "kept"),
    [
        (events.points_redeemed("o", "P1"), "program_id", 973, "973"),
        (events.redeem_requested("o"), "program_id", 973, "973"),
        (events.points_redeemed("o", "P1"), "redemption_id", 5501, "5501"),
        (events.points_redeemed("o", "P1"), "external_reference_number", 77, "77"),
        (events.coupon_redeemed("o", 5), "order_ref", 120045, "120045"),
        (
            events.transaction_completed("o"),
            "bill_number",
            9000000000000000001,
            "9000000000000000001",
        ),
        (events.transaction_completed("o"), "bill_number", -12, "-12"),
        (events.transaction_completed("o"), "bill_number", 1e3, "1000"),
    ],
)
def test_identifiers_the_platform_keeps_as_text_accept_json_numbers_as_their_exact_text(
    event, field, sent, kept
):
    parsed = parse_event(_with(event, **{field: sent}))
    assert getattr(parsed, field) == kept


def test_a_numeric_customer_identifier_is_kept_as_its_digits():
    event = events.coupon_redeemed("o", 5)
    event["customer"] = {"identifier_type": "mobile", "identifier_value": 919800000001}
    assert parse_event(json.dumps(event).encode()).customer.identifier_value == "919800000001"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (True, "not true/false"),
        (12.5, "fraction"),
        ({"id": 1}, "valid string"),
        ([1], "valid string"),
        ("", "at least 1 character"),
    ],
)
def test_identifiers_refuse_booleans_fractions_objects_and_arrays(value, words):
    reason = _reason(_with(events.points_redeemed("o", "P1"), program_id=value))
    assert "field 'program_id'" in reason
    assert words in reason


@pytest.mark.parametrize(
    "stamp", [12345, "12345", "2026-12-01T10:00:00", "2026-12-01", "yesterday", True, None]
)
def test_occurred_at_must_be_iso_8601_text_with_an_offset(stamp):
    reason = _reason(_with(events.coupon_redeemed("o", 5), occurred_at=stamp))
    assert "field 'occurred_at'" in reason


def test_occurred_at_with_an_offset_keeps_its_instant():
    parsed = parse_event(
        _with(events.coupon_redeemed("o", 5), occurred_at="2026-12-01T10:00:00+05:30")
    )
    assert parsed.occurred_at.utcoffset().total_seconds() == 5.5 * 3600


@pytest.mark.parametrize("redemption_id", [1, JAVA_LONG_MAX])
def test_coupon_ids_from_1_to_the_java_long_max_are_accepted(redemption_id):
    parsed = parse_event(_with(events.coupon_redeemed("o", 5), redemption_id=redemption_id))
    assert parsed.redemption_id == redemption_id


@pytest.mark.parametrize("redemption_id", [0, -1, JAVA_LONG_MAX + 1, 10**30, "12", 1.5, True])
def test_coupon_ids_outside_1_to_the_java_long_max_are_refused(redemption_id):
    reason = _reason(_with(events.coupon_redeemed("o", 5), redemption_id=redemption_id))
    assert "field 'redemption_id'" in reason


def test_a_bill_listing_a_coupon_id_beyond_the_java_long_max_is_refused():
    bill = events.transaction_completed(
        "o", redemptions=[{"kind": "coupon", "redemption_id": JAVA_LONG_MAX + 1}]
    )
    assert "field 'redemptions.0'" in _reason(json.dumps(bill).encode())


@pytest.mark.parametrize(
    ("place", "expected"),
    [
        ("event_id", "field 'event_id'"),
        ("order_ref", "field 'order_ref'"),
        ("till_note", "field 'till_note'"),
    ],
)
def test_nul_inside_any_string_is_refused_and_the_field_named(place, expected):
    body = _with(events.coupon_redeemed("o", 5), **{place: "a\u0000b"})
    assert b"\\u0000" in body
    reason = _reason(body)
    assert expected in reason
    assert "NUL" in reason


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"event_id": "e", "x\\ud800y": 1, "type": "coupon.redeemed"}', "field name 'x"),
        (b'{"event_id": "\\ud800", "type": "coupon.redeemed"}', "field 'event_id'"),
        (b'{"type": "coupon.redeemed", "tags": ["ok", "\\udfff"]}', "field 'tags[1]'"),
    ],
)
def test_a_lone_surrogate_in_a_string_or_a_key_is_refused(body, field):
    reason = _reason(body)
    assert field in reason
    assert "lone surrogate" in reason


def test_raw_nul_bytes_and_invalid_utf8_are_refused_as_not_json_or_not_text():
    assert "not JSON" in _reason(b'{"event_id": "a\x00b"}')
    assert "not UTF-8" in _reason(b'{"event_id": "\xed\xa0\x80"}')  # an encoded surrogate


def test_a_body_over_the_size_limit_is_refused_before_it_is_parsed():
    huge = b'{"pad": "' + b"x" * 300_000 + b'"}'
    reason = _reason(huge)
    assert "bytes, over the intake's limit" in reason


@pytest.mark.parametrize("depth", [50, 1_000, 50_000])
def test_deep_nesting_is_refused_without_a_recursion_error(depth):
    objects = min(depth, 40_000)  # five bytes a level: stay under the size limit
    for body in (b"[" * depth + b"]" * depth, b'{"a":' * objects + b"1" + b"}" * objects):
        assert "levels deep" in _reason(body)


def test_unknown_fields_nested_twenty_deep_are_kept():
    deep: object = "bottom"
    for _ in range(20):
        deep = {"next": deep}
    parsed = parse_event(_with(events.coupon_redeemed("o", 5), extra_tree=deep))
    kept = parsed.model_dump(mode="json")["extra_tree"]
    for _ in range(20):
        kept = kept["next"]
    assert kept == "bottom"


def test_brackets_inside_strings_do_not_count_as_nesting():
    parsed = parse_event(_with(events.coupon_redeemed("o", 5), note="[" * 5000 + '"{'))
    assert parsed.model_dump()["note"].startswith("[[[")


@pytest.mark.parametrize(
    ("number", "words"),
    [
        (b"1" * 41, "digits"),
        (b"1." + b"1" * 70, "characters long"),
        (b"1e999999", "out of range"),
        (b"NaN", "not a JSON number"),
        (b"-Infinity", "not a JSON number"),
    ],
)
def test_numbers_beyond_the_bounds_are_refused(number, words):
    assert words in _reason(b'{"event_id": "e", "n": ' + number + b"}")


def test_points_beyond_fifteen_digits_are_refused():
    reason = _reason(_with(events.points_redeemed("o", "P1"), points="1e20"))
    assert "field 'points'" in reason


@pytest.mark.parametrize(
    ("body", "words"),
    [(b"[1]", "an array"), (b'"text"', "a string"), (b"null", "null"), (b"7", "a number")],
)
def test_json_that_is_not_an_object_says_what_it_is(body, words):
    assert words in _reason(body)
