"""`.env`, where the README tells users to put passwords, never reaches git or a Docker image
(issue 13, finding 6: neither .gitignore nor .dockerignore named it; the Dockerfile's build stage
runs `COPY . .`)."""

from __future__ import annotations

import fnmatch
import subprocess

import pytest

from tests.security.conftest import ROOT

SECRETS = [".env", ".env.local", ".env.production"]


def _git_ignores(name: str) -> bool:
    result = subprocess.run(
        ["git", "check-ignore", "--quiet", "--no-index", name], cwd=ROOT, check=False
    )
    assert result.returncode in (0, 1), "git check-ignore failed"
    return result.returncode == 0


def _docker_ignores(name: str) -> bool:
    """Docker's rule: the last pattern of .dockerignore that matches decides; ``!`` re-includes."""
    ignored = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        if fnmatch.fnmatchcase(name, pattern.removeprefix("!").removeprefix("/")):
            ignored = not negated
    return ignored


@pytest.mark.parametrize("name", SECRETS)
def test_settings_files_with_secrets_are_ignored_by_git_and_docker(name):
    assert _git_ignores(name)
    assert _docker_ignores(name)


def test_the_example_settings_file_is_still_kept_in_git():
    assert not _git_ignores(".env.example")
