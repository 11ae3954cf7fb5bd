"""`recon audit ...` against a seeded PostgreSQL database, in every output format."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy.orm import Session

from models.outcomes import Outcome
from models.session import engine_for
from tests.factories.outcomes import NOW, make_outcome, make_outcomes
from tests.factories.redemptions import make_redeem_request, make_redemption
from tests.factories.transactions import make_transaction
from worker.cli import audit as audit_cli
from worker.cli import cli
from worker.ops import migrate

HOUR = dt.timedelta(hours=1)
FORMATS = ("table", "json", "csv")
Recon = Callable[..., Result]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite database built by the migrations, copied for each test."""
    path = tmp_path_factory.mktemp("sqlite") / "template.sqlite3"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest, sqlite_template: Path, tmp_path: Path) -> str:
    """Every audit command runs on both databases the product supports."""
    if request.param == "postgresql":
        request.getfixturevalue("clean_db")
        return request.getfixturevalue("pg_url")
    path = tmp_path / "recon.sqlite3"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    with Session(engine_for(db_url), expire_on_commit=False) as db_session:
        yield db_session


@pytest.fixture
def recon(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Recon]:
    """Runs `recon audit ...` against the test database and returns click's Result."""
    monkeypatch.setenv("RECON_DATABASE_URL", db_url)
    audit_cli.register(cli)
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(cli, ["audit", *args], catch_exceptions=False)

    yield run
    engine_for(db_url).dispose()


def parsed(result: Result, fmt: str) -> list[dict]:
    assert result.exit_code == 0, result.output
    if fmt == "json":
        return json.loads(result.stdout)
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(result.stdout)))
    raise AssertionError(fmt)


@pytest.fixture
def history(session: Session) -> None:
    """Bill B-1 (order O-1, customer C-1) tried twice, plus rows that must not show up."""
    make_outcome(
        session,
        at=NOW - 2 * HOUR,
        bill_number="B-1",
        order_ref="O-1",
        customer="C-1",
        redemption_id="501",
        status="retrying",
        code=None,
        http_status=503,
        message="busy",
    )
    make_outcome(
        session,
        at=NOW,
        bill_number="B-1",
        order_ref="O-1",
        customer="C-1",
        redemption_id="501",
        attempt=2,
    )
    make_outcome(session, at=NOW, bill_number="B-2", order_ref="O-2", customer="C-2")
    session.commit()


LOOKUPS = [
    ("bill", "B-1"),
    ("redemption", "501"),
    ("order", "O-1"),
    ("customer", "C-1"),
]


@pytest.mark.usefixtures("history")
@pytest.mark.parametrize(("command", "key"), LOOKUPS)
@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_lookup_lists_the_keys_outcomes_oldest_first_with_the_audit_fields(
    recon: Recon, command: str, key: str, fmt: str
) -> None:
    rows = parsed(recon(command, key, "--format", fmt), fmt)

    assert [row["status"] for row in rows] == ["retrying", "succeeded"]
    assert list(rows[0]) == list(Outcome.AUDIT_FIELDS)
    assert rows[0]["at"] == (NOW - 2 * HOUR).isoformat()
    assert {row["bill_number"] for row in rows} == {"B-1"}


@pytest.mark.usefixtures("history")
@pytest.mark.parametrize(("command", "key"), LOOKUPS)
def test_lookup_table_is_for_people(recon: Recon, command: str, key: str) -> None:
    result = recon(command, key)

    assert result.exit_code == 0, result.output
    assert "retrying" in result.stdout
    assert "succeeded" in result.stdout
    assert "B-2" not in result.stdout


@pytest.mark.usefixtures("history")
@pytest.mark.parametrize(("command", "key"), LOOKUPS)
def test_lookup_window_is_since_included_until_excluded(
    recon: Recon, command: str, key: str
) -> None:
    since = (NOW - 3 * HOUR).isoformat()
    rows = parsed(
        recon(command, key, "--since", since, "--until", NOW.isoformat(), "--format", "json"),
        "json",
    )

    assert [row["status"] for row in rows] == ["retrying"]


@pytest.mark.usefixtures("history")
def test_lookup_limit_keeps_the_first_rows_and_says_so(recon: Recon) -> None:
    result = recon("bill", "B-1", "--limit", "1", "--format", "json")

    assert [row["status"] for row in parsed(result, "json")] == ["retrying"]
    assert "--limit" in result.stderr


def test_redemption_kind_narrows_ids_shared_by_coupons_and_vendor_configs(
    session: Session, recon: Recon
) -> None:
    make_outcome(session, redemption_id="77", kind="coupon")
    make_outcome(session, redemption_id="77", kind="vendor", code=5016)
    session.commit()

    rows = parsed(recon("redemption", "77", "--kind", "vendor", "--format", "json"), "json")

    assert [(row["kind"], row["code"]) for row in rows] == [("vendor", 5016)]


@pytest.mark.parametrize(("command", "key"), LOOKUPS)
def test_empty_lookup_prints_a_friendly_line_or_an_empty_document(
    session: Session, recon: Recon, command: str, key: str
) -> None:
    table = recon(command, key)
    assert table.exit_code == 0
    assert table.stdout.startswith("No outcomes for")

    assert parsed(recon(command, key, "--format", "json"), "json") == []
    header_only = recon(command, key, "--format", "csv")
    assert header_only.stdout.strip() == ",".join(Outcome.AUDIT_FIELDS)


def test_summary_counts_outcomes_by_kind_status_and_code_in_the_window(
    session: Session, recon: Recon
) -> None:
    make_outcomes(session, 3, at=NOW, kind="coupon", status="succeeded", code=761)
    make_outcomes(session, 2, at=NOW, kind="coupon", status="failed", code=510)
    make_outcomes(session, 1, at=NOW, kind="points", status="succeeded", code=None)
    make_outcomes(session, 4, at=NOW - 30 * HOUR, kind="coupon", status="succeeded", code=761)
    session.commit()
    window = ("--since", (NOW - HOUR).isoformat(), "--until", (NOW + HOUR).isoformat())

    rows = parsed(recon("summary", *window, "--format", "json"), "json")
    as_csv = parsed(recon("summary", *window, "--format", "csv"), "csv")
    table = recon("summary", *window)

    assert rows == [
        {"kind": "coupon", "status": "failed", "code": 510, "count": 2},
        {"kind": "coupon", "status": "succeeded", "code": 761, "count": 3},
        {"kind": "points", "status": "succeeded", "code": None, "count": 1},
    ]
    assert [row["count"] for row in as_csv] == ["2", "3", "1"]
    assert as_csv[2]["code"] == ""
    assert "total: 6" in table.stdout


def test_summary_and_failures_default_to_the_last_24_hours(session: Session, recon: Recon) -> None:
    now = dt.datetime.now(dt.UTC)
    make_outcome(session, at=now - HOUR, status="failed", code=510)
    make_outcome(session, at=now - 25 * HOUR, status="failed", code=510)
    session.commit()

    summary = parsed(recon("summary", "--format", "json"), "json")
    failures = parsed(recon("failures", "--format", "json"), "json")

    assert [row["count"] for row in summary] == [1]
    assert len(failures) == 1


def test_failures_lists_failed_and_gave_up_newest_first(session: Session, recon: Recon) -> None:
    make_outcome(session, at=NOW - 2 * HOUR, status="failed", code=510, bill_number="B-F")
    make_outcome(session, at=NOW - HOUR, status="gave_up", code=None, bill_number="B-G")
    make_outcome(session, at=NOW - HOUR, status="succeeded", bill_number="B-S")
    make_outcome(session, at=NOW - HOUR, status="unknown", bill_number="B-U")
    session.commit()
    window = ("--since", (NOW - 3 * HOUR).isoformat(), "--until", NOW.isoformat())

    for fmt in ("json", "csv"):
        rows = parsed(recon("failures", *window, "--format", fmt), fmt)
        assert [row["bill_number"] for row in rows] == ["B-G", "B-F"]
    assert "B-F" in recon("failures", *window).stdout


def test_unknown_lists_unresolved_redeem_requests_with_their_last_message(
    session: Session, recon: Recon
) -> None:
    waiting = make_redeem_request(session, state="unknown", attempts=3, order_ref="P-1")
    make_redeem_request(session, state="succeeded", order_ref="P-2")
    make_outcome(
        session,
        kind="points_redeem",
        order_ref="P-1",
        event_id=waiting.event_id,
        status="retrying",
        at=NOW - HOUR,
        message="read time-out",
    )
    make_outcome(
        session,
        kind="points_redeem",
        order_ref="P-1",
        event_id=waiting.event_id,
        status="unknown",
        at=NOW,
        message="no settled answer after 3 attempts",
    )
    session.commit()

    rows = parsed(recon("unknown", "--format", "json"), "json")
    as_csv = parsed(recon("unknown", "--format", "csv"), "csv")
    table = recon("unknown")

    assert rows == [
        {
            "event_id": waiting.event_id,
            "order_ref": "P-1",
            "customer": waiting.customer_value,
            "points": "25.5",
            "external_reference_number": waiting.external_reference_number,
            "attempts": 3,
            "last_outcome_at": NOW.isoformat(),
            "last_message": "no settled answer after 3 attempts",
        }
    ]
    assert [row["order_ref"] for row in as_csv] == ["P-1"]
    assert "P-2" not in table.stdout
    assert "P-1" in table.stdout


def test_unmatched_finds_orphan_redemptions_and_listed_ones_that_never_arrived(
    session: Session, recon: Recon
) -> None:
    old = dt.datetime.now(dt.UTC) - 48 * HOUR
    recent = dt.datetime.now(dt.UTC) - HOUR
    orphan = make_redemption(session, created_at=old, order_ref="LONELY")
    make_redemption(session, created_at=recent, order_ref="JUST-ARRIVED")
    bill = make_transaction(session, created_at=old, order_ref="MATCHED")
    make_redemption(session, created_at=old, order_ref="MATCHED", transaction_id=bill.id)
    make_transaction(
        session,
        created_at=old,
        order_ref="LISTS-TWO",
        bill_number="B-LIST",
        listed=[("coupon", "424242"), ("points", "PX-1")],
    )
    make_redemption(
        session,
        kind="points",
        redemption_id="PX-1",
        created_at=old,
        order_ref="LISTS-TWO",
        transaction_id=None,
    )
    make_transaction(session, created_at=recent, listed=[("coupon", "515151")])
    session.commit()

    rows = parsed(recon("unmatched", "--format", "json"), "json")
    by_case = {(row["case"], row["order_ref"], row["redemption_id"]) for row in rows}

    assert by_case == {
        ("redemption_without_bill", "LONELY", orphan.redemption_id),
        # PX-1 arrived but is not attached yet: it is an orphan, not a missing one.
        ("redemption_without_bill", "LISTS-TWO", "PX-1"),
        ("listed_redemption_missing", "LISTS-TWO", "424242"),
    }
    missing = next(row for row in rows if row["case"] == "listed_redemption_missing")
    assert missing["bill_number"] == "B-LIST"
    as_csv = parsed(recon("unmatched", "--format", "csv"), "csv")
    assert len(as_csv) == 3
    everything = parsed(recon("unmatched", "--older-than-hours", "0", "--format", "json"), "json")
    assert {row["order_ref"] for row in everything} >= {"JUST-ARRIVED"}
    assert "listed_redemption_missing" in recon("unmatched").stdout


def test_export_streams_every_row_in_the_window_as_csv_or_json_lines(
    session: Session, recon: Recon
) -> None:
    make_outcomes(session, 2500, at=NOW)
    make_outcomes(session, 10, at=NOW - 48 * HOUR)
    session.commit()
    window = ("--since", (NOW - HOUR).isoformat(), "--until", (NOW + HOUR).isoformat())

    as_csv = recon("export", *window)
    as_jsonl = recon("export", *window, "--format", "jsonl")
    everything = recon("export")

    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == 2500
    assert list(rows[0]) == list(Outcome.AUDIT_FIELDS)
    lines = as_jsonl.stdout.splitlines()
    assert len(lines) == 2500
    assert set(json.loads(lines[0])) == set(Outcome.AUDIT_FIELDS)
    assert "exported 2510 outcomes" in everything.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("bill", "B-1", "--since", "yesterday"), "not an ISO 8601 date"),
        (("summary", "--since", "2026-13-01"), "not an ISO 8601 date"),
        (
            ("order", "O-1", "--since", "2026-11-21", "--until", "2026-11-20"),
            "must be earlier than --until",
        ),
        (("failures", "--format", "xml"), "'xml' is not one of"),
        (("export", "--format", "json"), "'json' is not one of"),
        (("unmatched", "--older-than-hours", "-1"), "--older-than-hours"),
        (("customer", "C-1", "--limit", "0"), "--limit"),
    ],
)
def test_bad_arguments_exit_2_with_a_one_line_reason(
    recon: Recon, args: tuple[str, ...], message: str
) -> None:
    result = recon(*args)

    assert result.exit_code == 2
    assert message in result.stderr


def test_dates_and_naive_datetimes_are_read_as_utc(session: Session, recon: Recon) -> None:
    make_outcome(session, at=dt.datetime(2026, 11, 20, 23, 30, tzinfo=dt.UTC), bill_number="B-D")
    session.commit()

    day = parsed(
        recon("bill", "B-D", "--since", "2026-11-20", "--until", "2026-11-21", "--format", "json"),
        "json",
    )
    naive = parsed(recon("bill", "B-D", "--since", "2026-11-20T23:31", "--format", "json"), "json")
    offset = parsed(
        recon("bill", "B-D", "--until", "2026-11-21T00:31+01:00", "--format", "json"), "json"
    )

    assert len(day) == 1
    assert naive == []
    assert len(offset) == 1


@pytest.mark.parametrize(
    "command",
    [
        "bill",
        "redemption",
        "order",
        "customer",
        "summary",
        "failures",
        "unknown",
        "unmatched",
        "export",
    ],
)
def test_every_command_explains_itself_with_examples(recon: Recon, command: str) -> None:
    result = recon(command, "--help")

    assert result.exit_code == 0
    assert "Examples:" in result.stdout
    assert "recon audit " + command in result.stdout


def test_an_unreachable_database_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECON_DATABASE_URL", "postgresql://nobody:hunter2@127.0.0.1:1/none")
    audit_cli.register(cli)

    result = CliRunner().invoke(cli, ["audit", "summary"])

    assert result.exit_code == 1
    assert "cannot query the database" in result.stderr
    assert "hunter2" not in result.output


def _screen(text: str) -> list[str]:
    return re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()


@pytest.mark.usefixtures("history")
def test_tables_fit_an_80_column_terminal_and_wide_shows_every_column(
    recon: Recon, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rich reads these as a terminal of 80 columns (what `recon audit` sees in a small window).
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("NO_COLOR", "1")

    narrow = _screen(recon("bill", "B-1").stdout)
    wide = _screen(recon("bill", "B-1", "--wide").stdout)

    assert max(len(line) for line in narrow) <= 80
    assert max(len(line) for line in wide) <= 80
    header = next(line for line in narrow if " at " in f" {line} ")
    for column in ("at", "redemption_id", "status", "code", "message"):
        assert column in header.split(), header
    body = " ".join(narrow)
    assert "busy" in body  # the message column has room for its text
    assert "retrying" in body
    assert "O-1" not in body  # order_ref is one of the columns --wide adds
    assert "--wide" in body
    assert "O-1" in " ".join(wide)


@pytest.mark.usefixtures("history")
def test_a_piped_table_honours_columns_and_has_no_trailing_spaces(
    recon: Recon, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CliRunner's stdout is not a terminal: what `recon audit bill B-1 | less` gets.
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.setenv("COLUMNS", "80")
    folded = recon("bill", "B-1").stdout.splitlines()
    assert max(len(line) for line in folded) <= 80
    assert all(line == line.rstrip() for line in folded)
    assert "\x1b" not in "".join(folded)
    assert "--wide" in " ".join(folded)  # the main columns, as on an 80-column terminal
    wide = recon("bill", "B-1", "--wide").stdout.splitlines()
    assert max(len(line) for line in wide) <= 80

    # Without COLUMNS, a piped table is as wide as its rows: every column, none folded.
    monkeypatch.delenv("COLUMNS")
    full = recon("bill", "B-1").stdout.splitlines()
    assert all(line == line.rstrip() for line in full)
    header = next(line for line in full if " at " in f" {line} ")
    for column in ("at", "order_ref", "bill_number", "http_status", "request_id"):
        assert column in header.split(), header
