"""The sandbox's settings: who may log in, how fast, and how unreliable the platform pretends to be.

Only the knobs in ``TUNABLE`` can change while the server runs (``POST /_admin/config``); users,
OAuth clients and the default balance are fixed when the server starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any


@dataclass
class SandboxConfig:
    users: dict[str, str] = field(default_factory=lambda: {"store.server": "server123"})
    oauth_clients: dict[str, str] = field(default_factory=lambda: {"recon-key": "recon-secret"})
    token_ttl_seconds: int = 3600
    rate_limit_per_minute: int = 1000  # per API key; 0 = unlimited
    rate_window_seconds: float = 60.0  # the sliding window the limit counts in
    error_rate: float = 0.0  # answered 500/502/503/504 without effect
    slow_rate: float = 0.0  # answered after slow_seconds, effect applied normally
    slow_seconds: float = 2.0
    drop_rate: float = 0.0  # connection closed, no answer, no effect
    lost_rate: float = 0.0  # effect applied, then connection closed with no answer
    seed: int | None = None
    default_points_balance: str = "1000000"  # decimal string

    def __post_init__(self) -> None:
        # Validate the constructor's values with the same rules as a run-time change, so a bad
        # CLI flag fails at start instead of producing a half-working server.
        apply_changes(self, {name: getattr(self, name) for name in TUNABLE})
        try:
            Decimal(self.default_points_balance)
        except InvalidOperation as exc:
            raise ValueError("default_points_balance must be a decimal string") from exc


RATES = ("error_rate", "slow_rate", "drop_rate", "lost_rate")
TUNABLE = (
    *RATES,
    "slow_seconds",
    "rate_limit_per_minute",
    "rate_window_seconds",
    "token_ttl_seconds",
    "seed",
)


def _number(name: str, value: Any, *, integer: bool, low: float, high: float) -> int | float:
    # Admin bodies are parsed with Decimal for exact points; a setting is happy with a float.
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError(f"{name} must be a number")
    value = float(value) if isinstance(value, Decimal) else value
    if integer and value != int(value):
        raise ValueError(f"{name} must be a whole number")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}")
    return int(value) if integer else float(value)


def apply_changes(config: SandboxConfig, changes: dict[str, Any]) -> None:
    """Validate every change first, then apply them all (a bad request changes nothing)."""
    unknown = sorted(set(changes) - set(TUNABLE))
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(unknown)}; tunable: {', '.join(TUNABLE)}")
    clean: dict[str, Any] = {}
    for name, value in changes.items():
        if name in RATES:
            clean[name] = _number(name, value, integer=False, low=0.0, high=1.0)
        elif name == "slow_seconds":
            clean[name] = _number(name, value, integer=False, low=0.0, high=600.0)
        elif name == "rate_limit_per_minute":
            clean[name] = _number(name, value, integer=True, low=0, high=10**9)
        elif name == "rate_window_seconds":
            clean[name] = _number(name, value, integer=False, low=0.1, high=3600.0)
        elif name == "token_ttl_seconds":
            clean[name] = _number(name, value, integer=True, low=1, high=10**8)
        elif name == "seed":
            clean[name] = (
                None
                if value is None
                else _number(name, value, integer=True, low=-(2**63), high=2**63)
            )
    # error, drop and lost share one draw per request (see faults.py), so they must fit in 1.
    shares = [
        clean.get(name, getattr(config, name)) for name in ("error_rate", "drop_rate", "lost_rate")
    ]
    if sum(shares) > 1.0 + 1e-9:
        raise ValueError("error_rate + drop_rate + lost_rate must not exceed 1")
    for name, value in clean.items():
        setattr(config, name, value)


def public_view(config: SandboxConfig) -> dict[str, Any]:
    """What GET /_admin/config shows: the knobs, and who may log in (never the secrets)."""
    view: dict[str, Any] = {name: getattr(config, name) for name in TUNABLE}
    view["users"] = sorted(config.users)
    view["oauth_clients"] = sorted(config.oauth_clients)
    view["default_points_balance"] = config.default_points_balance
    return view
