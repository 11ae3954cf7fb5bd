"""The audit page in a real browser (Debian's headless Chromium driven by Playwright).

The database is filled by the real pipeline: an order system publishes to RabbitMQ, a real worker
stores and reconciles against the sandbox. Then `recon web` serves the page from that database,
and a person's steps are replayed: sign in, search a bill, read its timeline, open the summary.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from models.outcomes import Outcome
from models.session import unit_of_work
from tests.factories import events
from tests.workers import RECON, wait_for

pytestmark = pytest.mark.e2e
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
MOBILE = "919700000555"
TOKEN = "browser-token-5c1e"


def codes_recorded(engine) -> list[int]:
    with unit_of_work(engine) as session:
        return sorted(c for c in session.scalars(select(Outcome.code)) if c is not None)


@pytest.fixture
def served(workers, tmp_path):
    """`recon web` on a free port, on the pipeline's database; yields its base URL."""
    log_path = tmp_path / "web.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [RECON, "web", "--port", "0"],
            env={**workers.env, "RECON_WEB_TOKEN": TOKEN},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        line = wait_for(
            lambda: re.search(r"serving (http://\S+)", log_path.read_text()), timeout=60
        )
        url = line.group(1).rstrip("/")
        assert url.startswith("http://127.0.0.1:")  # loopback unless told otherwise
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_a_bill_searched_in_the_browser_shows_761_510_and_the_batch_762(
    workers, clean_db, sandbox, served, tmp_path
):
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get, as root)")
    from playwright.sync_api import expect, sync_playwright

    sandbox.register_coupon(6101, MOBILE)
    sandbox.register_coupon(6102, MOBILE)
    workers.start()
    workers.publish(
        events.body(events.coupon_redeemed("web-1", 6101, MOBILE)),
        events.body(events.coupon_redeemed("web-1", 6102, MOBILE)),
        events.body(events.coupon_redeemed("web-1", 6103, MOBILE)),  # never issued: 510
        events.body(
            events.transaction_completed(
                "web-1", MOBILE, bill_number="B-WEB-761", bill_amount="149.50"
            )
        ),
    )
    wait_for(lambda: 762 in codes_recorded(clean_db), timeout=90)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(served + "/")
            expect(page).to_have_url(re.compile(r"/login"))
            page.fill("input[name=token]", TOKEN)
            page.click("button:has-text('Sign in')")

            page.fill("#q", "B-WEB-761")
            page.press("#q", "Enter")
            expect(page).to_have_url(re.compile(r"/bill\?number=B-WEB-761"))
            expect(page.locator("h1")).to_have_text("Bill B-WEB-761")
            codes = page.locator("table.timeline td.code").all_inner_texts()
            assert sorted(code for code in codes if code) == ["510", "761", "761", "762"]
            failed = page.locator("tr.outcome", has_text="6103")
            expect(failed.locator(".status")).to_have_text("failed")
            expect(page.locator("dd.amount")).to_have_text("149.5000")
            page.screenshot(path=str(tmp_path / "bill.png"), full_page=True)

            page.click("a[href^='/order?ref=']")
            expect(page.locator("h1")).to_have_text(re.compile(r"Order "))
            expect(page.locator("table.redemptions tbody tr")).to_have_count(3)

            page.click("nav >> text=Summary")
            expect(page.locator("svg.chart")).to_be_visible()
            expect(page.locator("table.summary")).to_contain_text("762")
            expect(page.locator("table.summary")).to_contain_text("510")
            page.screenshot(path=str(tmp_path / "summary.png"), full_page=True)
            assert TOKEN not in page.content()
        finally:
            browser.close()
    assert (tmp_path / "summary.png").stat().st_size > 0
    assert (tmp_path / "bill.png").stat().st_size > 0
    keep = os.environ.get("RECON_KEEP_SCREENSHOTS")
    if keep:  # how docs/ got its pictures: RECON_KEEP_SCREENSHOTS=docs make test
        for name in ("bill.png", "summary.png"):
            shutil.copy(tmp_path / name, Path(keep) / f"web-{name}")
