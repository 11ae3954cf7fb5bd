"""JSON as the platform sees it: money and points are written as exact decimal numbers.

The standard library can only write a ``Decimal`` as a string or by going through ``float``
(``12.10`` could become ``12.1`` or, for long values, a different number). Points and bill amounts
are money-like, so containers are written here and every ``Decimal`` leaf goes out as its exact
decimal text, an ordinary JSON number. Answers are read with ``parse_float=Decimal`` for the same
reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

#: ``json.dumps(text, ensure_ascii=False)`` without building an encoder per call.
_string = json.encoder.encode_basestring


def dumps(value: Any) -> str:
    """Compact JSON text; a ``Decimal`` is written as an exact JSON number (never via float)."""
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a JSON number")
        return format(value, "f")
    if isinstance(value, Mapping):
        parts = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, not {type(key).__name__}")
            parts.append(f"{_string(key)}:{dumps(item)}")
        return "{" + ",".join(parts) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def loads(data: bytes | str) -> Any:
    """Parse JSON, keeping non-integral numbers exact as ``Decimal``."""
    return json.loads(data, parse_float=Decimal)
