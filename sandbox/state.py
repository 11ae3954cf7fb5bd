"""Everything the pretend platform remembers: redemptions, balances, vendor configurations.

One lock guards it all. Each public method is one short critical section that checks and
changes together (look up, then update; check balance, then deduct), so concurrent requests
can never both see the old state. Methods hand out copies, never the stored dicts.
"""

from __future__ import annotations

import itertools
import random
import string
import threading
from decimal import Decimal
from typing import Any

from sandbox.formats import epoch_ms

_CODE_ALPHABET = string.ascii_letters + string.digits


def _copy(record: dict[str, Any]) -> dict[str, Any]:
    # Nested values are replaced on update, never changed in place, so one level is enough.
    return {**record, "metadata": dict(record["metadata"])}


class Store:
    def __init__(self, default_balance: str, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._default_balance = Decimal(default_balance)
        self._seed = seed
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._coupons: dict[int, dict[str, Any]] = {}
            self._points: dict[str, dict[str, Any]] = {}  # redemption_id -> record
            self._by_reference: dict[str, str] = {}  # external_reference_number -> redemption_id
            self._applied: dict[tuple[str, str], str] = {}  # (api key, reference) -> redemption_id
            self._balances: dict[str, Decimal] = {}  # mobile -> points
            self._vendor: dict[tuple[int, int], dict[str, Any]] = {}
            self._ids = itertools.count(26_500_000)
            self._rng = random.Random(self._seed)

    # -- coupons ---------------------------------------------------------------------------
    def register_coupons(self, items: list[tuple[int, str, str, str | None]]) -> int:
        """(redemption_id, identifier type, value, coupon code) each; re-registering resets."""
        now = epoch_ms()
        with self._lock:
            for redemption_id, kind, value, code in items:
                self._coupons[redemption_id] = {
                    "redemption_id": redemption_id,
                    "customer": {"type": kind, "value": value},
                    "coupon_code": code,
                    "registered_at": now,
                    "metadata": {},
                    "update_count": 0,
                    "last_updated_at": None,
                }
        return len(items)

    def coupon(self, redemption_id: int) -> dict[str, Any] | None:
        with self._lock:
            record = self._coupons.get(redemption_id)
            return _copy(record) if record else None

    def update_coupon(
        self, redemption_id: int, kind: str, value: str, fields: dict[str, Any]
    ) -> bool:
        """Overwrite the fields sent; False when the id is unknown or is another customer's."""
        with self._lock:
            record = self._coupons.get(redemption_id)
            if record is None or record["customer"] != {"type": kind, "value": value}:
                return False
            record["metadata"] = {**record["metadata"], **fields}
            record["update_count"] += 1
            record["last_updated_at"] = epoch_ms()
            return True

    # -- points redemptions ----------------------------------------------------------------
    def _new_code(self) -> str:
        while True:
            code = "".join(self._rng.choices(_CODE_ALPHABET, k=6))
            if code not in self._points:
                return code

    def _insert_points(self, record: dict[str, Any]) -> dict[str, Any]:
        record.setdefault("redemption_id", None)
        if not record["redemption_id"]:
            record["redemption_id"] = self._new_code()
        record["id"] = next(self._ids)
        record.setdefault("metadata", {})
        record.setdefault("update_count", 0)
        self._points[record["redemption_id"]] = record
        if record.get("external_reference_number"):
            self._by_reference[record["external_reference_number"]] = record["redemption_id"]
        return record

    def register_points(self, records: list[dict[str, Any]]) -> list[str]:
        """Records made earlier (admin API); an id is generated when redemption_id is empty."""
        with self._lock:
            return [self._insert_points(record)["redemption_id"] for record in records]

    def points(self, redemption_id: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._points.get(redemption_id)
            return _copy(record) if record else None

    def update_points(
        self,
        *,
        redemption_id: str | None,
        reference: str | None,
        kind: str,
        value: str,
        fields: dict[str, Any],
    ) -> tuple[str, dict[str, Any] | None]:
        """("missing" | "reversed" | "updated", the record after the update)."""
        with self._lock:
            if redemption_id is None:
                redemption_id = self._by_reference.get(reference or "")
            record = self._points.get(redemption_id or "")
            # Another customer's redemption is reported exactly like an unknown one (8015), so
            # the answer does not reveal which ids exist.
            if record is None or record["customer"] != {"type": kind, "value": value}:
                return "missing", None
            if record.get("state") == "reversed":
                return "reversed", _copy(record)
            record["metadata"] = {**record["metadata"], **fields}
            record["update_count"] += 1
            record["last_updated_at"] = epoch_ms()
            return "updated", _copy(record)

    def redeem(
        self,
        *,
        api_key: str,
        reference: str | None,
        mobile: str,
        points: Decimal,
        details: dict[str, Any],
    ) -> tuple[str, dict[str, Any] | None]:
        """Take points once per (API key, reference).

        Returns ("replay" | "insufficient" | "applied", record).
        """
        with self._lock:
            if reference and (api_key, reference) in self._applied:
                return "replay", _copy(self._points[self._applied[(api_key, reference)]])
            balance = self._balances.get(mobile, self._default_balance)
            if balance < points:
                return "insufficient", None
            self._balances[mobile] = balance - points
            record = self._insert_points(
                {
                    **details,
                    "external_reference_number": reference,
                    "customer": {"type": "mobile", "value": mobile},
                    "points": str(points),
                    "state": "active",
                    "redeemed_at": epoch_ms(),
                    "till": api_key,
                    "balance_after": str(balance - points),
                    "source": "v1.1/points/redeem",
                }
            )
            if reference:
                self._applied[(api_key, reference)] = record["redemption_id"]
            return "applied", _copy(record)

    # -- balances --------------------------------------------------------------------------
    def set_balances(self, balances: dict[str, Decimal]) -> None:
        with self._lock:
            self._balances.update(balances)

    def balance(self, mobile: str) -> Decimal:
        with self._lock:
            return self._balances.get(mobile, self._default_balance)

    # -- vendor redemption configurations --------------------------------------------------
    def push_vendor(
        self, brand_id: int, redemption_id: int, body: dict[str, Any], api_key: str
    ) -> dict[str, Any]:
        """Replace the stored configuration (created on first push) and count the push."""
        now = epoch_ms()
        with self._lock:
            previous = self._vendor.get((brand_id, redemption_id))
            record = {
                "brand_id": brand_id,
                "id": redemption_id,
                "config": body,
                "push_count": (previous["push_count"] if previous else 0) + 1,
                "created_on": previous["created_on"] if previous else now,
                "last_updated_on": now,
                "last_updated_by": api_key,
            }
            self._vendor[(brand_id, redemption_id)] = record
            return dict(record)

    def vendor(self, brand_id: int, redemption_id: int) -> dict[str, Any] | None:
        with self._lock:
            record = self._vendor.get((brand_id, redemption_id))
            return dict(record) if record else None
