"""Vendor redemption configuration files, shaped like seed 004's example."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

#: A vendor credential: it must never show in logs, output or the audit trail.
SECRET = "Basic SECRETVALUE123"
BODY = '{"root": {"coupon": [{"customer": {"mobile": "${mobile}"}, "series_id": 716308}]}}'


def vendor_config(config_id: int = 25772, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "id": config_id,
        "name": "miles",
        "redemptionType": "MILES",
        "actions": [
            {
                "apiUrl": "https://vendor.example/v1.1/coupon/issue",
                "apiBodyField": BODY,
                "apiBody": BODY,
                "name": "issue",
                "execOrder": 1,
                "apiType": "POST",
                "retryAction": False,
                "actionId": 20811,
                "enabled": True,
                "apiHeaders": {"Authorization": SECRET, "Content-Type": "application/json"},
                "contextKeys": {"voucher": "response.coupon.code"},
            }
        ],
        "responseKeys": ["voucher"],
        "vendorId": "124",
        "enabled": True,
    }
    config.update(copy.deepcopy(overrides))
    return config


def write_config(directory: Path, name: str, document: Any) -> Path:
    path = directory / name
    text = document if isinstance(document, str) else json.dumps(document, indent=2)
    path.write_text(text, encoding="utf-8")
    return path
