"""compose.yaml publishes Flower and RabbitMQ's management UI to this host only, and Flower only
with a sign-in that comes from the environment, never from the file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

COMPOSE = yaml.safe_load((Path(__file__).parents[2] / "compose.yaml").read_text())
CONSOLES = {"flower": "5555", "rabbitmq": "15672"}


def test_flower_and_the_management_ui_are_published_on_loopback_only():
    for service, port in CONSOLES.items():
        published = COMPOSE["services"][service].get("ports", [])
        assert published, service
        for mapping in published:
            assert str(mapping).startswith("127.0.0.1:"), f"{service} publishes {mapping}"
        assert any(str(mapping).endswith(f":{port}") for mapping in published), service


def test_flower_takes_its_basic_auth_from_the_environment_and_no_password_is_written_here():
    flower = COMPOSE["services"]["flower"]
    assert re.fullmatch(
        r"\$\{FLOWER_BASIC_AUTH(:?-)?\}", flower["environment"]["FLOWER_BASIC_AUTH"]
    )
    for service in ("rabbitmq", "flower"):
        text = yaml.safe_dump(COMPOSE["services"][service])
        assert "recon:recon@" not in text
        assert "RABBITMQ_DEFAULT_PASS: recon" not in text


def run_flower_entrypoint(basic_auth: str) -> subprocess.CompletedProcess[str]:
    """The flower service's entrypoint as the container runs it, with `echo` as Flower."""
    entrypoint = [part.replace("$$", "$") for part in COMPOSE["services"]["flower"]["entrypoint"]]
    return subprocess.run(
        [*entrypoint, "echo", "flower started"],
        env={"PATH": "/usr/bin:/bin", "FLOWER_BASIC_AUTH": basic_auth},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_flower_refuses_to_start_without_a_sign_in():
    refused = run_flower_entrypoint("")
    assert refused.returncode == 1
    assert "FLOWER_BASIC_AUTH" in refused.stderr
    assert "flower started" not in refused.stdout
    started = run_flower_entrypoint("ops:long-random-password")
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "flower started"
