"""Reading the configuration files of a directory: each is valid, or carries all its problems."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.vendor_config.validate import ADDRESS_KEYS, Problem, check_document


@dataclass(frozen=True)
class VendorConfig:
    """A valid file: which configuration of which brand, and the body to send."""

    source: Path
    config_id: int
    brand_id: int
    body: dict[str, Any] = field(repr=False)  # holds apiHeaders: never print it


@dataclass(frozen=True)
class InvalidFile:
    source: Path
    problems: tuple[Problem, ...]


def load_directory(
    directory: Path, *, default_brand_id: int | None
) -> list[VendorConfig | InvalidFile]:
    """Every ``*.json`` file of ``directory``, in name order, each valid or with its problems."""
    results: list[VendorConfig | InvalidFile] = []
    owners: dict[tuple[int, int], Path] = {}
    for path in sorted(directory.glob("*.json")):
        loaded = load_file(path, default_brand_id=default_brand_id)
        if isinstance(loaded, VendorConfig):
            # Two files for one configuration would overwrite each other on every push.
            key = (loaded.brand_id, loaded.config_id)
            if key in owners:
                message = (
                    f"configuration {loaded.config_id} of brand {loaded.brand_id} is also "
                    f"defined by {owners[key].name}"
                )
                loaded = InvalidFile(path, (Problem("$.id", message),))
            else:
                owners[key] = path
        results.append(loaded)
    return results


def load_file(path: Path, *, default_brand_id: int | None) -> VendorConfig | InvalidFile:
    """Read and check one file."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return InvalidFile(path, (Problem("$", "is not UTF-8 text"),))
    except OSError as exc:
        return InvalidFile(path, (Problem("$", f"cannot be read: {exc.strerror}"),))
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        return InvalidFile(path, (Problem("$", f"is not valid JSON: {exc.msg} at {where}"),))
    problems = check_document(document, default_brand_id=default_brand_id)
    if problems:
        return InvalidFile(path, tuple(problems))
    body = {key: value for key, value in document.items() if key not in ADDRESS_KEYS}
    brand_id = document.get("brandId", default_brand_id)
    return VendorConfig(source=path, config_id=document["id"], brand_id=brand_id, body=body)
