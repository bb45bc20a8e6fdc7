"""The upload page in real headless Chromium against real Gunicorn: upload, languages, errors."""

from __future__ import annotations

import pytest

from app import labels
from benchkit.images import image_bytes, sample_photos
from benchkit.server import GunicornServer
from benchkit.system import find

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.browser, pytest.mark.needs("chromium")]
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def server(real_model_path, tmp_path_factory):
    with GunicornServer(
        tmp_path_factory.mktemp("ui"), workers=1, model=real_model_path, max_batch=4
    ) as srv:
        yield srv


@pytest.fixture
def page(server):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find("chromium"), args=ARGS)
        context = browser.new_context(viewport={"width": 900, "height": 800})
        page = context.new_page()
        page.goto(server.url)
        yield page
        browser.close()


@pytest.fixture
def photo(tmp_path):
    photos = sample_photos(1)
    path = tmp_path / (photos[0].name if photos else "generated.jpg")
    path.write_bytes(photos[0].read_bytes() if photos else image_bytes())
    return path


def test_upload_shows_three_labels_with_scores(page, photo, tmp_path):
    page.set_input_files("#file", str(photo))
    card = page.locator(".card").first
    card.locator("li").nth(2).wait_for(timeout=30_000)
    assert card.locator("li").count() == 3
    names = card.locator(".label").all_inner_texts()
    assert all(name in labels.names("en") for name in names)
    scores = card.locator(".score").all_inner_texts()
    assert all(s.endswith("%") and 0 <= float(s[:-1]) <= 100 for s in scores)
    assert "ms" in card.locator(".meta").inner_text()
    page.screenshot(path=str(tmp_path / "upload.png"), full_page=True)


@pytest.mark.skipif(not labels.ZH_FILE.exists(), reason="app/labels_zh.txt is missing")
def test_switch_to_chinese_relabels_and_is_remembered(page, photo, tmp_path):
    page.set_input_files("#file", str(photo))
    page.locator(".card .label").first.wait_for(timeout=30_000)
    page.click("button[data-lang=zh]")
    all_chinese = (
        "() => { const l = [...document.querySelectorAll('.card .label')];"
        " return l.length === 3 && l.every(x => /[\\u4e00-\\u9fff]/.test(x.textContent)); }"
    )
    page.wait_for_function(all_chinese, timeout=30_000)
    assert all(name in labels.names("zh") for name in page.locator(".label").all_inner_texts())
    page.screenshot(path=str(tmp_path / "zh.png"), full_page=True)
    page.reload()
    assert page.locator("button[data-lang=zh]").get_attribute("aria-pressed") == "true"


def test_a_text_file_shows_the_api_error(page, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    page.set_input_files("#file", str(text))
    error = page.locator(".card .error")
    error.wait_for(timeout=30_000)
    assert "not an image in a supported format" in error.inner_text()
    page.screenshot(path=str(tmp_path / "error.png"), full_page=True)


def test_untrained_banner_and_phone_layout(page, server, real_model_path, tmp_path):
    import json

    trained = json.loads(real_model_path.with_suffix(".json").read_text())["trained"]
    assert page.locator("#untrained").count() == (0 if trained else 1)
    page.set_viewport_size({"width": 375, "height": 740})
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, "the page scrolls sideways on a phone"
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)


def test_the_page_works_under_its_content_security_policy(server, photo):
    """Upload and preview with the CSP enforced: no violation reaches the console."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find("chromium"), args=ARGS)
        page = browser.new_page()
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        response = page.goto(server.url)
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        page.set_input_files("#file", str(photo))
        page.locator(".card .label").first.wait_for(timeout=30_000)
        preview_loaded = "() => document.querySelector('.card img').naturalWidth > 0"
        page.wait_for_function(preview_loaded, timeout=30_000)  # a blob: image
        browser.close()
    assert not [m for m in console if "Content Security Policy" in m], console
