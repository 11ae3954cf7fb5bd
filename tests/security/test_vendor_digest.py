"""What `recon vendor push` stores to tell a change cannot be used to guess a vendor credential
(issue 13, finding 6: it stored an unsalted SHA-256 of a body whose every byte but the apiHeaders
values is in version control, so a reader of the table could test guesses offline).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from models.vendor import VendorConfigState
from tests.conftest import SANDBOX_PASSWORD, SANDBOX_USER, SandboxAdmin
from tests.factories.vendor import SECRET, vendor_config, write_config
from worker.cli import cli
from worker.cli import vendor as vendor_cli

BRAND = 61
KEY = "a-deployment-secret-of-32-chars!"


@pytest.fixture
def push(
    pg_url: str, sandbox: SandboxAdmin, session: Session, monkeypatch: pytest.MonkeyPatch
) -> CliRunner:
    for name, value in {
        "RECON_DATABASE_URL": pg_url,
        "LOYALTY_API_URL": sandbox.url,
        "LOYALTY_API_USERNAME": SANDBOX_USER,
        "LOYALTY_API_PASSWORD": SANDBOX_PASSWORD,
        "LOYALTY_RATE_LIMIT_PER_MINUTE": "60000",
        "RECON_VENDOR_DIGEST_KEY": KEY,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LOYALTY_API_CLIENT_KEY", raising=False)
    vendor_cli.register(cli)
    return CliRunner()


def _what_was_sent(config: dict, brand: int) -> bytes:
    """The body as it goes to the platform, brand and id first, canonical JSON."""
    body = {k: v for k, v in config.items() if k not in ("id", "brandId")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{brand}\n{config['id']}\n{canonical}".encode()


def test_the_stored_digest_confirms_a_guessed_credential_only_with_the_deployment_key(
    push: CliRunner, session: Session, tmp_path: Path
):
    config = vendor_config(25772)
    write_config(tmp_path, "miles.json", config)

    result = push.invoke(cli, ["vendor", "push", str(tmp_path), "--brand-id", str(BRAND)])

    assert result.exit_code == 0, result.output
    stored = session.scalars(select(VendorConfigState.content_sha256)).one()
    right_guess = _what_was_sent(config, BRAND)  # the attacker guessed SECRET
    assert SECRET.encode() in right_guess
    assert stored != hashlib.sha256(right_guess).hexdigest()
    assert stored == hmac.new(KEY.encode(), right_guess, hashlib.sha256).hexdigest()


def test_without_the_key_a_configuration_with_header_values_is_not_pushed_or_stored(
    push: CliRunner,
    sandbox: SandboxAdmin,
    session: Session,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.delenv("RECON_VENDOR_DIGEST_KEY")
    write_config(tmp_path, "miles.json", vendor_config(25772))

    result = push.invoke(cli, ["vendor", "push", str(tmp_path), "--brand-id", str(BRAND)])

    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "RECON_VENDOR_DIGEST_KEY is not set" in lines[0]
    assert "miles.json" in lines[0]
    assert sandbox.requests(path="/api_gateway/rewards/core/v1/vendor/redemption") == []
    assert session.execute(text("SELECT count(*) FROM vendor_configs")).scalar() == 0


def test_a_short_key_is_refused_by_name(push: CliRunner, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RECON_VENDOR_DIGEST_KEY", "short")
    write_config(tmp_path, "miles.json", vendor_config(25772))

    result = push.invoke(cli, ["vendor", "push", str(tmp_path), "--brand-id", str(BRAND)])

    assert result.exit_code == 1
    assert "RECON_VENDOR_DIGEST_KEY: shorter than 32 characters" in result.stderr
    assert "short" not in result.stderr.replace("shorter", "")


def test_the_upgrade_forgets_the_unkeyed_digests_release_0_2_stored():
    from models.session import build_engine
    from tests import services
    from worker.ops import migrate

    url = services.create_database("recon_vdig")
    try:
        migrate.upgrade(url, "3b9e6f2d0c41")  # the schema just before the digests were forgotten
        unkeyed = hashlib.sha256(b'61\n1\n{"apiHeaders":{"X-Api-Key":"guess"}}').hexdigest()
        engine = build_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO vendor_configs (brand_id, config_id, content_sha256, source, "
                        "pushed_at) VALUES (61, 1, :digest, 'a.json', now())"
                    ),
                    {"digest": unkeyed},
                )
            migrate.upgrade(url)
            with engine.connect() as conn:
                kept = conn.execute(text("SELECT content_sha256 FROM vendor_configs")).scalars()
                assert list(kept) == [""]
        finally:
            engine.dispose()
    finally:
        services.drop_database(url)
