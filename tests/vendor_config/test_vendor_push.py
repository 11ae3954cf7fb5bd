"""`recon vendor push DIR`: validation, change detection, outcomes, and secrets kept secret."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select
from sqlalchemy.orm import Session
from structlog.testing import capture_logs

from models.outcomes import Outcome
from models.session import engine_for
from models.vendor import VendorConfigState
from tests.conftest import SANDBOX_PASSWORD, SANDBOX_USER, SandboxAdmin
from tests.factories.vendor import SECRET, vendor_config, write_config
from worker.cli import cli
from worker.cli import vendor as vendor_cli
from worker.vendor_config import InvalidFile, VendorConfig, load_file

VENDOR_PATH = "/api_gateway/rewards/core/v1/vendor/redemption"
BRAND = 61


class Push:
    """Runs `recon vendor push ...`; keeps what each run logged (structlog) in ``logs``."""

    def __init__(self) -> None:
        self.runner = CliRunner()
        self.logs: list[dict[str, Any]] = []

    def __call__(self, *args: str) -> Result:
        with capture_logs() as captured:
            result = self.runner.invoke(cli, ["vendor", "push", *args], catch_exceptions=False)
        self.logs.extend(captured)
        return result


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    directory = tmp_path / "vendor-configs"
    directory.mkdir()
    return directory


@pytest.fixture
def push(
    pg_url: str, sandbox: SandboxAdmin, session: Session, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Push]:
    """`recon vendor push` against the test database and the sandbox."""
    monkeypatch.setenv("RECON_DATABASE_URL", pg_url)
    monkeypatch.setenv("LOYALTY_API_URL", sandbox.url)
    monkeypatch.setenv("LOYALTY_API_USERNAME", SANDBOX_USER)
    monkeypatch.setenv("LOYALTY_API_PASSWORD", SANDBOX_PASSWORD)
    monkeypatch.setenv("LOYALTY_RATE_LIMIT_PER_MINUTE", "60000")
    monkeypatch.setenv("RECON_VENDOR_DIGEST_KEY", "k" * 32)
    monkeypatch.delenv("LOYALTY_API_CLIENT_KEY", raising=False)
    monkeypatch.delenv("LOYALTY_BRAND_ID", raising=False)
    vendor_cli.register(cli)
    yield Push()
    engine_for(pg_url).dispose()


def vendor_requests(sandbox: SandboxAdmin) -> list[dict[str, Any]]:
    return sandbox.requests(path=VENDOR_PATH)


def stored_at_sandbox(sandbox: SandboxAdmin, config_id: int) -> dict[str, Any]:
    answer = sandbox.http.get(f"{sandbox.url}/_admin/vendor/{BRAND}/{config_id}", timeout=10)
    answer.raise_for_status()
    return answer.json()


def outcomes(session: Session) -> list[Outcome]:
    session.expire_all()
    return list(session.scalars(select(Outcome).order_by(Outcome.id)))


# --- validation: one file per rule -------------------------------------------------------------


def _with_action(**changes: Any) -> dict[str, Any]:
    config = vendor_config(brandId=BRAND)
    config["actions"][0].update(changes)
    return config


def _without(key: str, action: bool = False) -> dict[str, Any]:
    config = vendor_config(brandId=BRAND)
    del (config["actions"][0] if action else config)[key]
    return config


def _second_action(**changes: Any) -> dict[str, Any]:
    config = vendor_config(brandId=BRAND)
    config["actions"].append({**copy.deepcopy(config["actions"][0]), **changes})
    return config


RULES = [
    ("not JSON", '{"id": 1,', "$", "is not valid JSON: Expecting"),
    ("not an object", [vendor_config()], "$", "must be a JSON object, not an array"),
    ("id missing", _without("id"), "$.id", "is missing"),
    ("id not positive", vendor_config(0, brandId=BRAND), "$.id", "must be a positive integer"),
    ("id a string", vendor_config("25772", brandId=BRAND), "$.id", "must be a positive integer"),
    (
        "no brand anywhere",
        vendor_config(),
        "$.brandId",
        "is missing: set it in the file, pass --brand-id",
    ),
    (
        "undocumented redemption type",
        vendor_config(brandId=BRAND, redemptionType="MILE"),
        "$.redemptionType",
        '"MILE" is not documented (one of: GAMES, AUCTION,',
    ),
    ("actions empty", vendor_config(brandId=BRAND, actions=[]), "$.actions", "is empty"),
    ("actions missing", _without("actions"), "$.actions", "is missing"),
    (
        "plain http",
        _with_action(apiUrl="http://vendor.example/issue"),
        "$.actions[0].apiUrl",
        "must be an https URL",
    ),
    (
        "credentials in the URL",
        _with_action(apiUrl="https://user:pw@vendor.example/issue"),
        "$.actions[0].apiUrl",
        "must not carry credentials",
    ),
    ("unknown method", _with_action(apiType="FETCH"), "$.actions[0].apiType", '"FETCH" is not'),
    ("execOrder a string", _with_action(execOrder="1"), "$.actions[0].execOrder", "is a string"),
    (
        "execOrder repeated",
        _second_action(name="again"),
        "$.actions[1].execOrder",
        "1 is also the execOrder of actions[0]",
    ),
    (
        "body not JSON once filled",
        _with_action(apiBody='{"mobile": ${mobile}'),
        "$.actions[0].apiBody",
        "is not valid JSON once its placeholders are filled: Expecting ',' delimiter at line 1, "
        "column 21",
    ),
    (
        "body field not JSON once filled",
        _with_action(apiBodyField='{"status": fulfillmentStatus,}'),
        "$.actions[0].apiBodyField",
        "is not valid JSON once its placeholders are filled",
    ),
    (
        "placeholder never closed",
        _with_action(apiBody='{"mobile": "${mobile"}'),
        "$.actions[0].apiBody",
        "has a placeholder opened at line 1, column 13 and never closed",
    ),
    ("body missing", _without("apiBody", action=True), "$.actions[0].apiBody", "is missing"),
    (
        "context key not a response key",
        _with_action(contextKeys={"coupon": "response.coupon.code"}),
        "$.actions[0].contextKeys.coupon",
        "is not one of responseKeys (voucher)",
    ),
    (
        "context key without a path",
        _with_action(contextKeys={"voucher": ""}),
        "$.actions[0].contextKeys.voucher",
        "must be a non-empty string",
    ),
    ("vendorId missing", _without("vendorId"), "$.vendorId", "is missing"),
    ("vendorId empty", vendor_config(brandId=BRAND, vendorId=""), "$.vendorId", "is empty"),
    (
        "header value not text",
        _with_action(apiHeaders={"X-Api-Key": 12345}),
        '$.actions[0].apiHeaders["X-Api-Key"]',
        "must be a string, not a number",
    ),
    (
        "headers not an object",
        _with_action(apiHeaders=[SECRET]),
        "$.actions[0].apiHeaders",
        "must be an object of header names to strings, not an array",
    ),
    (
        "misspelt field",
        vendor_config(brandId=BRAND, responsekeys=["voucher"]),
        "$.responsekeys",
        "is not a known field",
    ),
]


@pytest.mark.parametrize(
    ("document", "location", "message"),
    [pytest.param(doc, loc, msg, id=name) for name, doc, loc, msg in RULES],
)
def test_each_rule_names_the_file_location_and_problem(
    configs: Path, document: Any, location: str, message: str
) -> None:
    loaded = load_file(write_config(configs, "c.json", document), default_brand_id=None)

    assert isinstance(loaded, InvalidFile)
    assert [(p.location, p.message[: len(message)]) for p in loaded.problems] == [
        (location, message)
    ]
    assert all(SECRET not in str(problem) for problem in loaded.problems)


def test_placeholders_may_sit_inside_strings_or_stand_bare(configs: Path) -> None:
    body = (
        '{"mobile": "${mobile}", "points": ${points}, "status": fulfillmentStatus, '
        '"ref": "rewardTransactionId", "address": "customfield_Address", "n": customfield_Count}'
    )
    document = _with_action(apiBody=body, apiBodyField=body)

    loaded = load_file(write_config(configs, "ok.json", document), default_brand_id=None)

    assert isinstance(loaded, VendorConfig)
    assert (loaded.config_id, loaded.brand_id) == (25772, BRAND)
    assert "id" not in loaded.body
    assert "brandId" not in loaded.body


def test_a_file_with_several_problems_reports_them_all(
    push: Push, sandbox: SandboxAdmin, configs: Path
) -> None:
    broken = vendor_config(redemptionType="POINTS", vendorId=None)
    broken["actions"][0].update(apiUrl="ftp://vendor.example", apiBody="{oops}", execOrder=2)
    broken["actions"].append({**copy.deepcopy(broken["actions"][0]), "apiType": "SEND"})
    broken["actions"][1]["contextKeys"] = {"code": "response.code"}
    write_config(configs, "broken.json", broken)

    result = push(str(configs), "--brand-id", str(BRAND))

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("invalid    broken.json  9 problem(s)")
    for expected in [
        '$.redemptionType: "POINTS" is not documented',
        "$.vendorId: must be a non-empty string, not null",
        "$.actions[0].apiUrl: must be an https URL (its scheme is ftp)",
        "$.actions[0].apiBody: is not valid JSON once its placeholders are filled",
        "$.actions[1].apiUrl: must be an https URL",
        '$.actions[1].apiType: "SEND" is not documented (one of: GET, POST, PUT, PATCH, DELETE)',
        "$.actions[1].apiBody: is not valid JSON",
        "$.actions[1].contextKeys.code: is not one of responseKeys (voucher)",
        "$.actions[1].execOrder: 2 is also the execOrder of actions[0]",
    ]:
        assert any(line.strip().startswith(expected) for line in lines), expected
    assert lines[-1] == "1 file(s): 1 invalid, 0 failed"
    assert vendor_requests(sandbox) == []
    assert SECRET not in result.output


def test_two_files_for_one_configuration_are_refused(push: Push, configs: Path) -> None:
    write_config(configs, "a.json", vendor_config(7, brandId=BRAND))
    write_config(configs, "b.json", vendor_config(7, brandId=BRAND, name="other"))

    result = push(str(configs), "--dry-run")

    assert result.exit_code == 1
    assert "$.id: configuration 7 of brand 61 is also defined by a.json" in result.stdout


# --- pushing ----------------------------------------------------------------------------------


def test_push_sends_each_config_once_and_records_5016(
    push: Push, sandbox: SandboxAdmin, session: Session, configs: Path
) -> None:
    write_config(configs, "miles.json", vendor_config(25772))
    write_config(configs, "voucher.json", vendor_config(25773, redemptionType="VOUCHER"))

    result = push(str(configs), "--brand-id", str(BRAND))

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith(
        "pushed     miles.json    id 25772 brand 61: 5016"
    )
    assert result.stdout.splitlines()[-1] == "2 file(s): 2 pushed, 0 invalid, 0 failed"
    assert len(vendor_requests(sandbox)) == 2
    assert stored_at_sandbox(sandbox, 25773)["config"]["redemptionType"] == "VOUCHER"
    rows = outcomes(session)
    assert [(o.kind, o.redemption_id, o.status, o.code, o.http_status) for o in rows] == [
        ("vendor", "25772", "succeeded", 5016, 200),
        ("vendor", "25773", "succeeded", 5016, 200),
    ]
    assert all(o.request_id for o in rows)
    assert rows[0].message == "Vendor redemption updated successfully (miles.json)"
    states = session.scalars(select(VendorConfigState).order_by(VendorConfigState.config_id))
    assert [(s.brand_id, s.config_id, s.source) for s in states] == [
        (BRAND, 25772, "miles.json"),
        (BRAND, 25773, "voucher.json"),
    ]


def test_a_second_push_sends_nothing_and_an_edit_sends_only_that_file(
    push: Push, sandbox: SandboxAdmin, configs: Path
) -> None:
    write_config(configs, "miles.json", vendor_config(25772))
    write_config(configs, "voucher.json", vendor_config(25773, redemptionType="VOUCHER"))
    assert push(str(configs), "--brand-id", str(BRAND)).exit_code == 0

    again = push(str(configs), "--brand-id", str(BRAND))

    assert again.exit_code == 0
    assert again.stdout.splitlines()[:2] == [
        "unchanged  miles.json    id 25772 brand 61",
        "unchanged  voucher.json  id 25773 brand 61",
    ]
    assert len(vendor_requests(sandbox)) == 2

    write_config(configs, "voucher.json", vendor_config(25773, redemptionType="GIFT_CARD"))
    edited = push(str(configs), "--brand-id", str(BRAND))

    assert edited.exit_code == 0
    assert "2 file(s): 1 pushed, 1 unchanged" in edited.stdout
    sent = vendor_requests(sandbox)
    assert len(sent) == 3
    assert sent[-1]["path"] == f"{VENDOR_PATH}/25773/brand/{BRAND}"
    assert stored_at_sandbox(sandbox, 25773)["push_count"] == 2
    assert stored_at_sandbox(sandbox, 25772)["push_count"] == 1


def test_the_brand_is_part_of_the_address(
    push: Push, sandbox: SandboxAdmin, configs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(configs, "miles.json", vendor_config(25772))
    monkeypatch.setenv("LOYALTY_BRAND_ID", str(BRAND))
    assert push(str(configs)).exit_code == 0

    other_brand = push(str(configs), "--brand-id", "62")

    assert other_brand.exit_code == 0
    assert [r["path"] for r in vendor_requests(sandbox)] == [
        f"{VENDOR_PATH}/25772/brand/{BRAND}",
        f"{VENDOR_PATH}/25772/brand/62",
    ]


def test_a_refusal_is_failed_with_its_code_and_is_sent_again_next_time(
    push: Push, sandbox: SandboxAdmin, session: Session, configs: Path
) -> None:
    write_config(configs, "miles.json", vendor_config(25772, brandId=BRAND))
    sandbox.script(VENDOR_PATH, {"code": 9499})

    refused = push(str(configs))

    assert refused.exit_code == 1
    assert "failed     miles.json  id 25772 brand 61: [9499]" in refused.stdout
    assert [(o.status, o.code) for o in outcomes(session)] == [("failed", 9499)]
    assert push(str(configs)).exit_code == 0
    assert [o.status for o in outcomes(session)] == ["failed", "succeeded"]


def test_a_transient_failure_is_gave_up_and_the_next_push_retries_it(
    push: Push, sandbox: SandboxAdmin, session: Session, configs: Path
) -> None:
    write_config(configs, "miles.json", vendor_config(25772, brandId=BRAND))
    sandbox.script(VENDOR_PATH, {"status": 503})

    first = push(str(configs))

    assert first.exit_code == 1
    assert "push again to retry" in first.stdout
    assert [(o.status, o.http_status) for o in outcomes(session)] == [("gave_up", 503)]
    assert push(str(configs)).exit_code == 0
    assert len(vendor_requests(sandbox)) == 2


def test_refused_credentials_stop_the_push(
    push: Push, sandbox: SandboxAdmin, configs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOYALTY_API_PASSWORD", "wrong")
    write_config(configs, "a.json", vendor_config(1, brandId=BRAND))
    write_config(configs, "b.json", vendor_config(2, brandId=BRAND))

    result = push(str(configs))

    assert result.exit_code == 1
    assert "failed     a.json" in result.stdout
    assert "not sent   b.json  id 2 brand 61: the platform refused our credentials" in result.stdout
    assert len(vendor_requests(sandbox)) == 1


def test_dry_run_lists_what_would_be_sent_and_sends_nothing(
    push: Push, sandbox: SandboxAdmin, session: Session, configs: Path
) -> None:
    write_config(configs, "miles.json", vendor_config(25772, brandId=BRAND))

    result = push(str(configs), "--dry-run")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "would push miles.json  id 25772 brand 61 (MILES, 1 action(s))",
        "1 file(s): 1 would push, 0 invalid, 0 failed (dry run: nothing sent)",
    ]
    assert vendor_requests(sandbox) == []
    assert outcomes(session) == []
    assert session.scalars(select(VendorConfigState)).all() == []


def test_header_values_reach_the_vendor_but_no_log_output_or_audit_row(
    push: Push,
    sandbox: SandboxAdmin,
    session: Session,
    configs: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_config(configs, "miles.json", vendor_config(25772, brandId=BRAND))
    write_config(configs, "refused.json", vendor_config(25773, brandId=BRAND))
    sandbox.script(VENDOR_PATH, {"code": 9499})  # the first push is refused, the next succeeds
    caplog.set_level(logging.DEBUG)

    dry = push(str(configs), "--dry-run")
    pushed = push(str(configs))

    assert pushed.exit_code == 1
    assert {o.status for o in outcomes(session)} == {"failed", "succeeded"}
    assert stored_at_sandbox(sandbox, 25773)["config"]["actions"][0]["apiHeaders"] == {
        "Authorization": SECRET,
        "Content-Type": "application/json",
    }
    assert [entry["event"] for entry in push.logs] == ["loyalty.call", "vendor.outcome"] * 2
    assert "SECRETVALUE123" not in repr(push.logs)
    assert "SECRETVALUE123" not in caplog.text
    assert "SECRETVALUE123" not in dry.output + pushed.output
    for outcome in outcomes(session):
        assert all("SECRETVALUE123" not in str(value) for value in outcome.as_row().values())
        assert '"Authorization":"***"' in (outcome.request_excerpt or "")
    for state in session.scalars(select(VendorConfigState)):
        columns = (state.brand_id, state.config_id, state.content_sha256, state.source)
        assert all("SECRETVALUE123" not in str(value) for value in columns)


# --- bad arguments ----------------------------------------------------------------------------


def test_a_missing_directory_is_a_usage_error(push: Push, tmp_path: Path) -> None:
    result = push(str(tmp_path / "nowhere"))

    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_a_directory_without_json_files_is_a_usage_error(push: Push, configs: Path) -> None:
    result = push(str(configs))

    assert result.exit_code == 2
    assert "holds no *.json files" in result.stderr


def test_a_brand_id_must_be_positive(push: Push, configs: Path) -> None:
    result = push(str(configs), "--brand-id", "0")

    assert result.exit_code == 2
    assert "--brand-id" in result.stderr
