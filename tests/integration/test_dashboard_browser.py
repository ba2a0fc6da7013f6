"""The dashboard in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright)
opens the page of a small recorded run, checks the loss chart and leaderboard show the run's numbers,
and saves docs/img/dashboard.png. Skips, with the reason, when Chromium cannot be launched."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from template.harness.dashboard import DashboardServer

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "tests" / "data" / "run_small"
DOCS_SCREENSHOT = ROOT / "docs" / "img" / "dashboard.png"  # refreshed with UPDATE_SCREENSHOTS=1
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium is not installed (scripts/setup_env.sh installs it with apt-get)")
    with sync_api.sync_playwright() as pw:
        try:
            b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        except sync_api.Error as e:
            pytest.skip(f"chromium does not start here: {str(e).splitlines()[0]}")
        yield b
        b.close()


@pytest.fixture
def dashboard_url():
    server = DashboardServer(RUN, port=0, refresh_s=60)
    url = server.start()
    yield url
    server.stop()


def test_dashboard_shows_the_runs_loss_and_leaderboard(browser, dashboard_url, tmp_path):
    report = json.loads((RUN / "report" / "report.json").read_text())
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(dashboard_url)
    page.wait_for_selector("#loss-chart circle.pt")
    # the loss chart: one point per window, at the run's values
    shown = [float(y) for y in page.eval_on_selector_all("#loss-chart circle.pt", "els => els.map(e => e.dataset.y)")]
    assert shown == pytest.approx(report["loss"], abs=1e-4)
    assert f"{report['loss'][-1]:.4f}" in page.inner_text("#meta")
    # the leaderboard: one window of the lead validator (the last it set weights in), best rating first
    lead = {json.loads(line)["window"]: json.loads(line)
            for line in (RUN / "metrics" / "validator0.jsonl").read_text().splitlines()}
    assert "Leaderboard after window 8" in page.inner_text("#leaderboard-title")
    assert "latest window 9" in page.inner_text("#leaderboard-title")
    cells = page.eval_on_selector_all("#leaderboard tr", "rows => rows.slice(1).map(r => "
                                      "[...r.querySelectorAll('td')].map(td => td.innerText))")
    uid, best = max(lead[8]["miners"].items(), key=lambda um: um[1]["rating"])
    assert len(cells) == len(lead[8]["miners"])
    assert cells[0][0] == uid and cells[0][3:6] == [f"{best['rating']:.2f}", f"{best['score']:.3f}",
                                                    f"{best['weight']:.3f}"]
    hostile = page.eval_on_selector_all("#leaderboard tr.hostile td:nth-child(2)", "els => els.map(e => e.innerText)")
    assert sorted(hostile) == ["copycat1", "noise0"]
    # the chain's payout: its own table, labelled with the block it was read at, richest first
    assert "block 412" in page.inner_text("#chain-title")
    chain = page.eval_on_selector_all("#chain tr", "rows => rows.slice(1).map(r => "
                                      "[...r.querySelectorAll('td')].map(td => td.innerText))")
    richest = max(report["neurons"], key=lambda n: n["emission_alpha"])
    assert len(chain) == len(report["neurons"]) and chain[0][1] == richest["name"]
    assert chain[0][5] == f"{richest['emission_alpha']:.2f}"
    # per-miner charts: a line per miner over the windows
    assert len(page.query_selector_all("#miner-rating circle.pt")) == 10 * len(lead[8]["miners"])
    assert len(page.query_selector_all("#miner-tokens_per_s circle.pt")) > 0
    assert "copy" in page.inner_text("#rejections") and "11" in page.inner_text("#rejections")
    assert "chain head 412" in page.inner_text("#meta")
    shot = DOCS_SCREENSHOT if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
