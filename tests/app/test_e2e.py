"""End-to-end in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright's
Python package; no browser is ever downloaded). Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import re
import shutil

import pytest

pytest.importorskip("gradio")
playwright_api = pytest.importorskip("playwright.sync_api")

from tests.app_support.server import ARTIFACTS  # noqa: E402

# Plotly renders a figure some seconds after its data arrive; on a loaded 2-core machine that can
# exceed Playwright's default 5 s for an assertion, so assertions wait up to 30 s (pages and
# handlers keep their own, longer timeouts).
playwright_api.expect.set_options(timeout=30_000)

CHROMIUM = os.environ.get("ROUTERDC_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]



@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (scripts/test.sh installs Debian's chromium)")
    pw = playwright_api.sync_playwright().start()
    b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
    yield b
    b.close()
    pw.stop()


@pytest.fixture
def page(browser, app_server):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    p = ctx.new_page()
    p.set_default_timeout(60_000)
    p.goto(app_server.url)
    p.locator("#query textarea").wait_for()
    yield p
    ctx.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"app-{name}.png"), full_page=True)


def route(page, text: str) -> None:
    page.locator("#query textarea").fill(text)
    page.locator("#route-btn").click()


def test_route_shows_chart_choice_and_map_point(page, app_server):
    route(page, "Write a Python function that checks whether a number is prime.")
    chosen = page.locator("#chosen")
    playwright_api.expect(chosen).to_contain_text("Chosen LLM", timeout=60_000)
    llms = app_server.ctx.routers.get(app_server.ctx.default_key).llms
    assert any(n in chosen.inner_text() for n in llms)
    playwright_api.expect(page.locator("#route-plot .js-plotly-plot .bars path, #route-plot .js-plotly-plot .point path").first).to_be_visible()
    playwright_api.expect(page.locator("#chosen")).to_contain_text("margin")
    playwright_api.expect(page.locator("#answer")).to_contain_text("No generation backend")
    shot(page, "route")
    page.get_by_role("tab", name="Explore").click()
    plot = page.locator("#map-plot .js-plotly-plot")
    playwright_api.expect(plot).to_be_visible()
    playwright_api.expect(page.locator("#map-plot .legendtext", has_text="your queries")).to_be_visible()
    playwright_api.expect(page.locator("#map-plot .legendtext", has_text="LLM embeddings")).to_be_visible()
    shot(page, "explore")


def test_example_from_score_set_in_chinese(page):
    page.get_by_role("button", name=re.compile(r"^C(MMLU|-EVAL) \(.*\): ")).first.click()
    # The example fills the box asynchronously: wait for Chinese text rather than reading at once.
    playwright_api.expect(page.locator("#query textarea")).to_have_value(re.compile("[\u4e00-\u9fff]"),
                                                                       timeout=30_000)
    page.locator("#route-btn").click()
    playwright_api.expect(page.locator("#verdict")).to_contain_text("recorded score", timeout=60_000)
    shot(page, "route-chinese-example")


def test_bad_inputs_show_messages_and_app_stays_up(page, app_server, tmp_path):
    page.locator("#query textarea").fill("   ")
    page.locator("#route-btn").click()
    playwright_api.expect(page.get_by_text("Type a query first").first).to_be_visible()
    shot(page, "bad-empty-query")
    route(page, "😀🎉 \x07 emoji only")
    playwright_api.expect(page.locator("#chosen")).to_contain_text("unknown to the encoder", timeout=60_000)
    page.get_by_role("tab", name="Evaluate").click()
    wrong = tmp_path / "scores.txt"
    wrong.write_text("not a score file", encoding="utf-8")
    page.locator("#eval-upload input[type=file]").set_input_files(str(wrong))
    page.locator("#eval-btn").click()
    playwright_api.expect(page.get_by_text("txt").filter(has_text="type").first).to_be_visible()
    shot(page, "bad-upload-type")
    page.get_by_role("tab", name="Route").click()
    route(page, "Is the app still up?")
    playwright_api.expect(page.locator("#chosen")).to_contain_text("Chosen LLM", timeout=60_000)


def test_evaluate_table_and_chart(page):
    page.get_by_role("tab", name="Evaluate").click()
    page.locator("#eval-btn").click()
    playwright_api.expect(page.locator("#eval-table")).to_contain_text("oracle", timeout=120_000)
    playwright_api.expect(page.locator("#eval-chart .js-plotly-plot")).to_be_visible()
    shot(page, "evaluate")


@pytest.mark.slow
def test_train_in_the_ui_then_hot_swap(page, app_server):
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-name textarea, #train-name input").first.fill("e2e-router")
    page.locator("#train-steps input").fill("30")
    page.locator("#train-rows input").fill("40")
    page.locator("#train-eval-every input").fill("10")
    page.locator("#train-start").click()
    playwright_api.expect(page.locator("#train-progress")).to_contain_text("Finished", timeout=240_000)
    playwright_api.expect(page.locator("#train-loss .js-plotly-plot")).to_be_visible()
    playwright_api.expect(page.locator("#train-acc .js-plotly-plot")).to_be_visible()
    shot(page, "train-finished")
    page.locator("#train-use").click()
    playwright_api.expect(page.locator("#status")).to_contain_text("e2e-router", timeout=60_000)
    page.get_by_role("tab", name="Route").click()
    route(page, "How many legs does a spider have?")
    playwright_api.expect(page.locator("#chosen")).to_contain_text("Chosen LLM", timeout=60_000)
    page.get_by_role("tab", name="Explore").click()
    playwright_api.expect(page.locator("#map-info")).to_contain_text("e2e-router", timeout=60_000)
    shot(page, "hot-swapped")
