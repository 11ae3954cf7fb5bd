"""Questions ops ask of the audit trail, as plain query functions over a ``Session``.

Every function here is keyword-only, named for what it answers, and served by an index (see
``models/outcomes.py`` and ``models/redemptions.py``); ``bench/audit_lookups.py`` times them on a
million outcome rows. The CLI (``recon audit ...``), the web page and the demo only render what
they return, with ``worker.audit.output``.

Windows are half-open, ``since <= at < until``, in UTC; ``None`` leaves that side open.
"""

from worker.audit.open_work import (
    UNKNOWN_FIELDS,
    UNMATCHED_FIELDS,
    unmatched_work,
    unresolved_unknown_requests,
)
from worker.audit.outcomes import (
    SUMMARY_FIELDS,
    count_outcomes,
    failed_outcomes,
    outcomes_for_bill,
    outcomes_for_customer,
    outcomes_for_order,
    outcomes_for_redemption,
    stream_outcomes,
)
from worker.audit.rejected import REJECTED_FIELDS, rejected_messages

__all__ = [
    "REJECTED_FIELDS",
    "SUMMARY_FIELDS",
    "UNKNOWN_FIELDS",
    "UNMATCHED_FIELDS",
    "count_outcomes",
    "failed_outcomes",
    "outcomes_for_bill",
    "outcomes_for_customer",
    "outcomes_for_order",
    "outcomes_for_redemption",
    "rejected_messages",
    "stream_outcomes",
    "unmatched_work",
    "unresolved_unknown_requests",
]
