"""Whatever arrives gets exactly one recorded fate: generated messages through real RabbitMQ into
the real intake and real PostgreSQL.

Each example is published to the events exchange, fetched from the events queue and handed to the
consumer's own ``handle_message``. Valid events must be accepted (or be duplicates of an earlier
example), everything else rejected with a reason and its bytes kept; nothing may raise, nothing
may be left unacknowledged, and the database must never be taken for down.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from models.events import InboxEvent
from models.session import unit_of_work
from tests.intake.conftest import receive

# Written out here, not imported: the test holds the contract's bounds independently.
TYPES = ("coupon.redeemed", "points.redeemed", "points.redeem_requested", "transaction.completed")
LONG_MAX = 2**63 - 1
BODY_LIMIT = 256 * 1024
IDENTIFIER_TYPES = ("mobile", "email", "externalId", "cardnumber")

storable_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
storable_text = st.text(alphabet=storable_chars, min_size=1, max_size=40)


def identifiers(longest: int):
    """Text up to the platform's length for that field, or a JSON integer."""
    return st.one_of(
        st.text(alphabet=storable_chars, min_size=1, max_size=longest),
        st.integers(min_value=0, max_value=10**18),
        st.text(alphabet=string.digits, min_size=1, max_size=20),
    )


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    storable_text,
)
json_trees = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(storable_text, children, max_size=3)
    ),
    max_leaves=12,
)
stamps = st.datetimes(
    min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2030, 1, 1), timezones=st.just(dt.UTC)
).map(dt.datetime.isoformat)
points = st.decimals(min_value=0, max_value=100_000, places=3).map(str)


@st.composite
def valid_events(draw) -> dict:
    kind = draw(st.sampled_from(TYPES))
    identifier_type = "mobile" if kind == "points.redeem_requested" else None
    event = {
        "event_id": draw(st.uuids()).hex,
        "type": kind,
        "occurred_at": draw(stamps),
        "order_ref": draw(identifiers(128)),
        "customer": {
            "identifier_type": identifier_type or draw(st.sampled_from(IDENTIFIER_TYPES)),
            "identifier_value": draw(identifiers(128)),
        },
    }
    if kind == "coupon.redeemed":
        event["redemption_id"] = draw(st.integers(min_value=1, max_value=LONG_MAX))
    elif kind == "points.redeemed":
        event["redemption_id"] = draw(identifiers(64))
        event["points"] = draw(points)
        event["program_id"] = draw(identifiers(64))
        event["validation_code"] = draw(st.text(alphabet=storable_chars, min_size=1, max_size=64))
    elif kind == "points.redeem_requested":
        event["points"] = draw(points)
        event["program_id"] = draw(identifiers(64))
        event["notes"] = draw(st.text(alphabet=storable_chars, max_size=1000))
    else:
        event["bill_number"] = draw(identifiers(128))
        event["purpose"] = draw(st.text(alphabet=storable_chars, max_size=255))
        event["custom_fields"] = draw(st.dictionaries(storable_text, storable_text, max_size=3))
        event["redemptions"] = draw(
            st.lists(
                st.one_of(
                    st.builds(
                        lambda n: {"kind": "coupon", "redemption_id": n},
                        st.integers(min_value=1, max_value=LONG_MAX),
                    ),
                    st.builds(lambda t: {"kind": "points", "redemption_id": t}, identifiers(64)),
                ),
                max_size=4,
            )
        )
        event["bill_id"] = draw(st.integers(min_value=1, max_value=LONG_MAX))
        event["bill_amount"] = draw(st.decimals(min_value=0, max_value=10**9, places=2).map(str))
    extras = draw(st.dictionaries(st.sampled_from(["till", "notes_x", "meta"]), json_trees))
    event |= extras
    depth = draw(st.integers(min_value=0, max_value=28))
    if depth:
        chain: object = "leaf"
        for _ in range(depth):
            chain = {"down": chain}
        event["deep_unknown"] = chain
    return event


REQUIRED = ("event_id", "type", "occurred_at", "order_ref", "customer")


@st.composite
def near_valid_events(draw) -> bytes:
    """A valid event with one change that the contract must refuse."""
    event = draw(valid_events())
    field = draw(st.sampled_from(REQUIRED))
    mutation = draw(
        st.sampled_from(["drop", "bool", "list", "object", "fraction", "nul", "surrogate", "long"])
    )
    if mutation == "drop":
        del event[field]
    elif mutation == "bool":
        event[field] = True
    elif mutation == "list":
        event[field] = [event[field]]
    elif mutation == "object":
        event[field] = {"value": event[field]}
    elif mutation == "fraction":
        event[field] = 12.5
    elif mutation in ("nul", "surrogate"):
        bad = "\x00" if mutation == "nul" else "\ud800"
        target = draw(st.sampled_from(["event_id", "order_ref", "till"]))
        event[target] = f"a{bad}b"
    else:
        event["event_id"] = "e" * draw(st.integers(min_value=129, max_value=5000))
    return json.dumps(event).encode()  # ensure_ascii: NUL and surrogates travel as \\u escapes


@st.composite
def garbage(draw) -> bytes:
    shape = draw(
        st.sampled_from(
            ["bytes", "truncated", "scalar", "array", "nested", "raw_nul", "huge", "deep_unknown"]
        )
    )
    if shape == "bytes":
        return draw(st.binary(max_size=2000))
    if shape == "truncated":
        body = json.dumps(draw(valid_events())).encode()
        return body[: draw(st.integers(min_value=0, max_value=len(body) - 1))]
    if shape == "scalar":
        return json.dumps(draw(json_leaves)).encode()
    if shape == "array":
        return json.dumps(draw(st.lists(json_trees, max_size=4))).encode()
    if shape == "nested":
        depth = draw(st.integers(min_value=50, max_value=50_000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        return opener * depth + b"1" + closer * depth
    if shape == "raw_nul":
        body = json.dumps(draw(valid_events())).encode()
        at = draw(st.integers(min_value=0, max_value=len(body)))
        return body[:at] + b"\x00" + body[at:]
    if shape == "huge":
        size = draw(st.integers(min_value=BODY_LIMIT + 1, max_value=BODY_LIMIT * 2))
        return b'{"event_id": "big", "pad": "' + b"x" * size + b'"}'
    depth = draw(st.integers(min_value=33, max_value=2_000))
    event = draw(valid_events())
    event.pop("deep_unknown", None)
    text = json.dumps(event)
    return (text[:-1] + ', "tree": ' + "[" * depth + "]" * depth + "}").encode()


messages = st.one_of(
    valid_events().map(lambda event: ("valid", json.dumps(event).encode())),
    near_valid_events().map(lambda body: ("invalid", body)),
    garbage().map(lambda body: ("invalid", body)),
)


def _row(engine, dedup_key: str) -> InboxEvent | None:
    with unit_of_work(engine) as session:
        return session.scalars(select(InboxEvent).where(InboxEvent.dedup_key == dedup_key)).first()


@settings(
    max_examples=int(os.environ.get("RECON_FUZZ_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(message=messages)
def test_every_message_gets_exactly_one_recorded_fate(broker, clean_db, message):
    expected, body = message
    if expected == "valid":
        key = json.loads(body)["event_id"]
    else:
        key = "rejected:" + hashlib.sha256(body).hexdigest()
    seen_before = _row(clean_db, key) is not None

    fate, delivered = receive(broker, clean_db, body)

    assert delivered.acknowledged
    assert broker.depth(broker.events.name) == 0
    if seen_before:
        assert fate == "duplicate"
        return
    row = _row(clean_db, key)
    if expected == "valid":
        assert fate == "accepted", row.reason if row else None
        assert row.status == "accepted"
        assert row.payload["event_id"] == key
        if "deep_unknown" in json.loads(body):
            assert row.payload["deep_unknown"] == json.loads(body)["deep_unknown"]
    else:
        assert fate == "rejected"
        assert row.status == "rejected"
        assert row.reason
        # The contract itself names what is wrong; the database never had to refuse it.
        assert not row.reason.startswith("could not be stored"), row.reason
        assert "\x00" not in row.reason
        assert row.body_size == len(body)
        assert row.body_sha256 == hashlib.sha256(body).hexdigest()
        assert row.raw_bytes == body[:BODY_LIMIT]
        assert "\x00" not in (row.raw_body or "")
