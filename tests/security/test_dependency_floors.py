"""No install can resolve a dependency to a version with a published advisory (issue 13,
finding 6: pyproject.toml allowed requests, urllib3, Flask and setuptools versions with one).

The table is the review's, written out here: each package with the first version that fixed the
latest advisory known for it. An install from the locks is covered by their pins; this is about
anyone installing the wheel into an environment of their own.
"""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.security.conftest import ROOT

FIXED_IN = {
    "requests": ("2.33.0", "CVE-2026-25645; CVE-2024-47081 in 2.32.4, CVE-2024-35195 in 2.32.0"),
    "urllib3": ("2.7.0", "GHSA-mf9v-mfxr-j63j, GHSA-qccp-gfcp-xxvc; 2.6.3: CVE-2026-21441"),
    "flask": ("3.1.3", "CVE-2026-27205; 3.1.1: CVE-2025-47278"),
    "werkzeug": ("3.1.6", "CVE-2026-27199; 3.1.5: CVE-2026-21860"),
    "jinja2": ("3.1.6", "CVE-2025-27516; 3.1.5: CVE-2024-56326, CVE-2024-56201"),
    "setuptools": ("83.0.0", "CVE-2026-59890; 80.10.2: CVE-2026-23949; 78.1.1: CVE-2025-47273"),
    "pytest": ("9.0.3", "CVE-2025-71176"),
    "playwright": ("1.55.1", "CVE-2025-59288"),
    "uv": ("0.9.5", "the 0.9.5 security release (archive parsing)"),
}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements() -> dict[str, Requirement]:
    specs = [
        *PYPROJECT["build-system"]["requires"],
        *PYPROJECT["project"]["dependencies"],
        *PYPROJECT["project"]["optional-dependencies"]["dev"],
    ]
    return {Requirement(spec).name.lower(): Requirement(spec) for spec in specs}


def _pins(lock: str) -> dict[str, Version]:
    text = (ROOT / lock).read_text()
    return {
        name.lower(): Version(version)
        for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.MULTILINE)
    }


@pytest.mark.parametrize("package", FIXED_IN)
def test_no_version_with_a_known_advisory_satisfies_the_declared_bounds(package):
    fixed, advisory = FIXED_IN[package]
    requirement = _requirements()[package]
    floors = [Version(s.version) for s in requirement.specifier if s.operator in (">=", ">")]

    assert floors, f"{requirement}: no lower bound"
    assert max(floors) >= Version(fixed), f"{requirement} admits {package} < {fixed}: {advisory}"


def test_the_locks_pin_versions_the_declared_bounds_admit():
    pins = {
        **_pins("requirements-dev.lock"),
        **_pins("requirements.lock"),
        **_pins("requirements-build.lock"),
    }
    for name, requirement in _requirements().items():
        if name in pins:
            assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]}: make lock"
