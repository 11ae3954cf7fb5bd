"""The summary chart, drawn on the server as SVG geometry (the template writes the markup).

No script and nothing fetched: a horizontal bar per (kind, status, code), coloured by status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

BAR_HEIGHT = 22
GAP = 6
LABEL_WIDTH = 260
BAR_WIDTH = 420
COUNT_WIDTH = 80
COLOURS = {
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "gave_up": "#6a1b9a",
    "retrying": "#ef6c00",
    "unknown": "#455a64",
    "skipped": "#9e9e9e",
}


def bars(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Bar geometry for the summary rows; widths relative to the largest count."""
    top = max((int(row["count"]) for row in rows), default=0) or 1
    drawn = []
    for index, row in enumerate(rows):
        code = row.get("code")
        label = f"{row['kind']} · {row['status']}" + (f" · {code}" if code is not None else "")
        drawn.append(
            {
                "y": index * (BAR_HEIGHT + GAP),
                "width": max(1, round(BAR_WIDTH * int(row["count"]) / top)),
                "label": label,
                "count": int(row["count"]),
                "colour": COLOURS.get(str(row["status"]), "#1565c0"),
            }
        )
    return {
        "bars": drawn,
        "bar_height": BAR_HEIGHT,
        "label_width": LABEL_WIDTH,
        "width": LABEL_WIDTH + BAR_WIDTH + COUNT_WIDTH,
        "height": max(BAR_HEIGHT, len(drawn) * (BAR_HEIGHT + GAP)),
    }
