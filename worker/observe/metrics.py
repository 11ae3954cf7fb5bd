"""What the worker counts for Prometheus: one small function per event, bounded labels only.

Call sites say what happened (``metrics.intake_message("stored")``); this module turns it into a
counter or a histogram. Every label value passes through a fixed vocabulary, and anything outside
it is counted as ``other``: an order, bill, customer or redemption id can never become a label,
and a platform that invents new codes cannot grow the number of series without bound.

``prometheus_client`` is imported on first use, not at import: it decides at its own import
whether to write values to the multiprocess directory, and ``recon worker`` sets that directory
only once it knows it is the worker (``worker/observe/exporter.py``). Outside a worker (the CLI, the
demo, unit tests) the same calls count in this process's memory.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Protocol

from worker.observe.series import series

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from sqlalchemy.orm import Session

OTHER = "other"
NONE = "none"

KINDS = frozenset({"coupon", "points", "points_redeem", "vendor"})
STATUSES = frozenset({"succeeded", "failed", "retrying", "gave_up", "unknown", "skipped"})
#: The platform's codes named by its pages and DESIGN.md, the transient ones, and our own local
#: 400 (a field rule without a documented code) and 401 (credentials refused).
CODES = frozenset(
    {
        *(400, 401, 461, 510, 521, 748, 749, 750, 761, 762, 800, 801, 815, 828, 878),
        *(886, 887, 889, 894, 898, 1212, 1219, 1632, 3316, 5016, 8015),
    }
)
#: The ``outcome`` word of the client's call log (``worker/loyalty/errors.py:outcome_of`` and the
#: result types' ``outcome``).
CALL_RESULTS = frozenset(
    {
        "succeeded", "partial", "failed", "answered", "rejected", "transient", "ambiguous",
        "rate_limited", "protocol_error", "unauthorized", "error",
    }
)  # fmt: skip
#: Path prefix -> endpoint label. Vendor paths carry ids, so a path is never a label itself.
ENDPOINTS = (
    ("/v2/coupon/redeem", "coupon_update"),
    ("/v2/points/updateRedemption", "points_update"),
    ("/v1.1/points/redeem", "points_redeem"),
    ("/api_gateway/rewards/core/v1/vendor/redemption/", "vendor_update"),
    ("/v3/oauth/token/generate", "oauth_token"),
)
INTAKE_FATES = frozenset({"stored", "duplicate", "rejected", "dead_lettered", "requeued", "held"})
#: Who spent a rate-limit slot: live work, or work the sweeper or the backfill re-drove.
WORK = frozenset({"live", "redriven"})
SWEPT = frozenset({"order", "redeem_request"})

_PENDING_OUTCOMES = "recon_metrics_pending_outcomes"


# --- events -----------------------------------------------------------------------------------


def outcome_recorded(session: Session, *, kind: str, status: str, code: int | None) -> None:
    """An outcome row was added to ``session``: counted when its transaction commits, so the
    counter matches the ``outcomes`` table (a rolled-back row never happened)."""
    _listen_to_sessions()
    pending = session.info.setdefault(_PENDING_OUTCOMES, [])
    pending.append((_pick(kind, KINDS), _pick(status, STATUSES), _code(code)))


def outcome_written(*, kind: str, status: str, code: int | None) -> None:
    """An outcome row was written and committed by a statement of its own."""
    series().outcomes.labels(_pick(kind, KINDS), _pick(status, STATUSES), _code(code)).inc()


class Call(Protocol):
    """What ``platform_call`` reads of a call (``worker.loyalty.types.Exchange`` has it)."""

    @property
    def path(self) -> str: ...
    @property
    def http_status(self) -> int | None: ...
    @property
    def elapsed_ms(self) -> float: ...


def platform_call(call: Call, *, code: int | None, result: str) -> None:
    """One call to the platform answered, or failed without an answer (``http_status`` None);
    ``code`` is the platform's code and ``result`` the call log's ``outcome`` word."""
    m = series()
    endpoint = endpoint_of(call.path)
    http_status, elapsed_ms = call.http_status, call.elapsed_ms
    m.calls.labels(
        endpoint, _http_class(http_status), _code(code), _pick(result, CALL_RESULTS)
    ).inc()
    m.call_seconds.labels(endpoint).observe(max(elapsed_ms, 0.0) / 1000.0)
    if http_status == 429:
        m.throttled.labels(endpoint).inc()
    if code == 521:
        m.customer_busy.labels(endpoint).inc()


def ratelimit_slot(work: str = "live") -> None:
    """A slot of the shared request budget was taken."""
    series().slots.labels(_pick(work, WORK)).inc()


def ratelimit_wait(seconds: float, work: str = "live") -> None:
    """A call waited in place for the budget (the histogram's ``_count`` counts the waits)."""
    series().waits.labels(_pick(work, WORK)).observe(max(seconds, 0.0))


def ratelimit_deferral(work: str = "live") -> None:
    """The budget was spent for too long: the task went back to the queue instead of waiting."""
    series().deferrals.labels(_pick(work, WORK)).inc()


def intake_message(fate: str) -> None:
    """One message off the events queue: stored (or ``accepted``), duplicate, rejected,
    dead_lettered, requeued, or held while the database is unavailable."""
    fate = "stored" if fate == "accepted" else fate  # the inbox's word for a stored event
    series().intake.labels(_pick(fate, INTAKE_FATES)).inc()


def intake_paused_probe() -> None:
    """The paused intake probed the database and found it still unavailable (every 1 to 30 s
    while it lasts: the alert on a long outage counts these)."""
    series().paused_probes.inc()


def sweeper_reenqueued(work: str, count: int = 1) -> None:
    """The sweeper enqueued stuck work again: ``order`` or ``redeem_request``."""
    if count > 0:
        series().swept.labels(_pick(work, SWEPT)).inc(count)


def backfill_redriven(kind: str, count: int = 1) -> None:
    """The backfill reset redemptions of ``kind`` to pending and re-drove them."""
    if count > 0:
        series().redriven.labels(_pick(kind, KINDS)).inc(count)


def backfill_run(*, succeeded: bool) -> None:
    """The nightly backfill task finished (or raised): counted, and its time kept, so an alert
    can tell that the latest run failed."""
    result = "succeeded" if succeeded else "failed"
    m = series()
    m.backfill_runs.labels(result).inc()
    m.backfill_last_run.labels(result).set_to_current_time()


# --- label vocabulary ---------------------------------------------------------------------------


def endpoint_of(path: str) -> str:
    path = path.split("?", 1)[0]
    for prefix, name in ENDPOINTS:
        if path.startswith(prefix):
            return name
    return OTHER


def _pick(value: str | None, vocabulary: frozenset[str]) -> str:
    return value if value in vocabulary else OTHER


def _code(code: int | None) -> str:
    if code is None:
        return NONE
    return str(code) if code in CODES else OTHER


def _http_class(status: int | None) -> str:
    if status is None:
        return NONE
    return f"{status // 100}xx" if 100 <= status <= 599 else OTHER


def local_registry() -> CollectorRegistry:
    """This process's own values (what is served when there is no multiprocess directory)."""
    return series().registry


# --- counting outcomes on commit ----------------------------------------------------------------


_listening = False
_listening_lock = threading.Lock()


def _listen_to_sessions() -> None:
    global _listening
    if _listening:
        return
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    with _listening_lock:
        if not _listening:  # listening twice would count every outcome twice
            event.listen(Session, "after_commit", _count_committed)
            # Runs after after_commit; a transaction that ends any other way rolled back.
            event.listen(Session, "after_transaction_end", _forget_unfinished)
            _listening = True


def _count_committed(session: Session) -> None:
    pending = session.info.pop(_PENDING_OUTCOMES, None)
    if not pending:
        return
    counter = series().outcomes
    for labels in pending:
        counter.labels(*labels).inc()


def _forget_unfinished(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_PENDING_OUTCOMES, None)
