"""The web page end to end in headless Chromium (Debian's package, driven by Playwright), against the real server
over the scripted GGUF that always answers high risk, so the crisis banner has something to show."""

import json
import os
import shutil

import pytest

from serve_helpers import held, paced_scripted_llama, scripted_llama, serve, tiny_llama  # noqa: F401  (fixtures)
from tiny_heads import build_tiny_heads

CHROMIUM = os.environ.get("MENTALGLM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--no-first-run", "--disable-component-update", "--disable-sync"]

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the Python package only)")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="no chromium: apt-get install -y chromium (scripts/setup.sh dev does)")


@pytest.fixture(scope="module")
def page_server(scripted_llama, tmp_path_factory):  # noqa: F811
    with serve(scripted_llama, tmp_path_factory.mktemp("page"), job_chunk=2) as (server, _client):
        yield server


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, page_server):
    context = browser.new_context(viewport={"width": 1100, "height": 800}, accept_downloads=True)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    yield page
    assert not errors, errors  # no JavaScript errors on the way
    context.close()


def _disclaimer_in_view(page) -> bool:
    box = page.locator("#disclaimer").bounding_box()
    return page.locator("#disclaimer").is_visible() and box is not None and box["y"] >= 0 and box["y"] < 50


def test_paste_a_post_and_see_labels_explanation_and_crisis_banner(page):
    assert _disclaimer_in_view(page)
    assert "不构成诊断" in page.locator("#disclaimer").inner_text()
    assert page.locator("input[name=task][value=suicide_risk]").is_checked()  # the server's default tasks
    page.fill("#post", "最近总觉得活着没有意思")
    page.click("#analyze")
    page.wait_for_selector("#analyze-status:has-text('完成')", timeout=30000)  # cards fill in as the answer streams
    card = page.locator(".result[data-task=suicide_risk]")
    assert "高自杀风险" in card.locator(".chip").inner_text() and "high suicide risk" in card.inner_text()
    assert "我不想活了" in card.locator(".explanation").inner_text()
    assert page.locator("#crisis").is_visible()
    assert "12356" in page.locator("#crisis-text").inner_text()  # the resources message
    assert page.locator(".result").count() == 3  # every default task has its card, parsed or not
    page.mouse.wheel(0, 3000)
    page.wait_for_timeout(100)
    assert _disclaimer_in_view(page)  # still in view after scrolling to the results


def test_empty_post_is_refused_on_the_page(page):
    page.click("#analyze")
    assert "paste a post first" in page.locator("#error").inner_text()


def test_upload_csv_choose_column_watch_progress_download_jsonl(page, tmp_path):
    csv = tmp_path / "posts.csv"
    # "content" is guessed first, but here it has an empty row: choosing "title" must avoid that error.
    csv.write_text("id,title,content\n" + "".join(f"r{i},标题{i},{'' if i == 0 else '帖子'}\n" for i in range(5)),
                   encoding="utf-8")
    page.set_input_files("#file", str(csv))
    page.wait_for_selector("#column-row:not([hidden])")
    assert page.locator("#text-column").input_value() == "content"  # guessed from the header
    page.select_option("#text-column", "title")  # the user's choice wins
    page.uncheck("#explain")
    page.click("#upload")
    page.wait_for_selector("#download:not([hidden])", timeout=60000)
    assert page.locator("#job-progress").evaluate("p => p.value") == 1
    assert "100%" in page.locator("#job-text").inner_text() and "15 / 15" in page.locator("#job-text").inner_text()
    assert "5" in page.locator("#job-risk").inner_text()  # five posts, each high risk
    with page.expect_download() as info:
        page.click("#download")
    rows = [json.loads(line) for line in open(info.value.path(), encoding="utf-8")]
    assert info.value.suggested_filename == "posts.mentalglm.jsonl"
    assert len(rows) == 15 and {r["id"] for r in rows} == {f"r{i}" for i in range(5)}
    assert sum(r["high_risk"] for r in rows) == 5
    assert not [r for r in rows if r["parse_status"] == "error"]  # the title column was used


@pytest.fixture(scope="module")
def paced_server(paced_scripted_llama, tmp_path_factory):  # noqa: F811
    with serve(paced_scripted_llama, tmp_path_factory.mktemp("paced-page"), tasks=("suicide_risk", "emotion"),
               max_tokens=64) as (server, _client):
        yield server


def test_the_explanation_appears_as_it_is_written(browser, paced_server, paced_scripted_llama):  # noqa: F811
    page = browser.new_context(viewport={"width": 1100, "height": 800}).new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(paced_server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#post", "最近总觉得活着没有意思")
    with held(paced_scripted_llama):  # the answer stops after its first piece until the page has been read
        page.click("#analyze")
        # Mid-way: part of the first answer is on the page while the analysis is still running.
        writing = page.wait_for_function("""() => {
            const p = document.querySelector('.result[data-task=suicide_risk] .explanation.writing');
            return p && document.querySelector('#analyze-status').textContent.includes('分析中') && p.textContent; }""")
        partial = writing.json_value()
    assert "这篇帖子" in partial and "没有希望" not in partial  # the beginning, not yet the end
    page.wait_for_selector("#analyze-status:has-text('完成')", timeout=30000)
    assert page.locator("#crisis").is_visible() and "12356" in page.locator("#crisis-text").inner_text()
    streamed = page.locator("#results").inner_text()
    assert "我不想活了，没有希望" in streamed and page.locator(".explanation.writing").count() == 0
    # The same cards the unstreamed answer renders into.
    unstreamed = page.evaluate("""async () => {
        const r = await fetch('/v1/analyze', {method: 'POST', headers: {'Content-Type': 'application/json'},
            body: JSON.stringify({text: '最近总觉得活着没有意思', tasks: chosenTasks(), explain: true})});
        renderResults(await r.json());
        return document.querySelector('#results').innerText; }""")
    assert unstreamed == streamed
    assert not errors, errors
    page.context.close()


@pytest.fixture(scope="module")
def heads_server(tiny_llama, tmp_path_factory):  # noqa: F811
    from mentalglm.heads.unsure import write_thresholds

    folder = build_tiny_heads(tiny_llama, tmp_path_factory.mktemp("page-heads") / "heads")
    write_thresholds(folder, {"tasks": {"suicide_risk": {"threshold": 1.01}}})  # every suicide_risk row unsure
    with serve(tiny_llama, tmp_path_factory.mktemp("page2"), prompt_style="heads", heads=str(folder)) as (server, _):
        yield server


def test_label_heads_show_probabilities_and_the_evidence_check(browser, heads_server):
    page = browser.new_context(viewport={"width": 1100, "height": 800}).new_page()
    page.goto(heads_server.url + "/")
    page.wait_for_selector("body[data-ready=true]")
    page.fill("#post", "最近工作不想活了路上")
    page.click("#analyze")
    page.wait_for_selector("#analyze-status:has-text('完成')", timeout=30000)
    card = page.locator(".result[data-task=suicide_risk]")
    chip = card.locator(".chip").inner_text()
    assert "高自杀风险" in chip and "%" in chip  # the label with its probability
    bars = card.locator(".score-row")
    assert bars.count() == 2 and "高自杀风险" in bars.nth(0).inner_text()  # most probable first
    assert card.locator(".evidence").count() == 1  # the explanation's quotes were checked, one way or the other
    assert "低自杀风险" in card.locator(".runner-up").inner_text()  # unsure: the runner-up beside the label
    page.context.close()
