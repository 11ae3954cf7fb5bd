"""Writing the operator log: one row per message an operator replayed or purged."""

from __future__ import annotations

import getpass
from typing import Any

from sqlalchemy.orm import Session

from models.operator_log import OperatorAction


def who(operator: str | None) -> str:
    """``--operator`` when given, else the login name (as `recon resolve` does)."""
    return (operator or getpass.getuser()).strip()[:128]


def record_action(
    session: Session,
    *,
    operator: str,
    action: str,
    reason: str,
    target: str,
    subject: str | None,
    detail: dict[str, Any] | None = None,
) -> OperatorAction:
    row = OperatorAction(
        operator=operator,
        action=action,
        reason=reason,
        target=target[:255],
        subject=subject[:128] if subject else None,
        detail=detail,
    )
    session.add(row)
    return row
