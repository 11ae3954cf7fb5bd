"""SQLAlchemy models of the reconciler. Importing this package registers every table."""

from models.base import Base
from models.dead_tasks import DeadTask
from models.events import InboxEvent
from models.operator_log import OperatorAction
from models.outcomes import Outcome
from models.ratelimit import RateLimitSlot, RateLimitState
from models.redemptions import PointsRedeemRequest, Redemption
from models.transactions import Transaction, TransactionLink
from models.vendor import VendorConfigState

__all__ = [
    "Base",
    "DeadTask",
    "InboxEvent",
    "OperatorAction",
    "Outcome",
    "PointsRedeemRequest",
    "RateLimitSlot",
    "RateLimitState",
    "Redemption",
    "Transaction",
    "TransactionLink",
    "VendorConfigState",
]
