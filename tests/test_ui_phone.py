"""The upload page with a 12 MP phone photo in real Chromium: it sends a downsized JPEG,
shows the original, and sends the original on request."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from benchkit.images import sample_photos
from benchkit.phones import PHONE_12MP, phone_jpeg
from tests.test_ui_browser import page, server  # noqa: F401 (fixtures)

pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.browser, pytest.mark.needs("chromium")]
PHOTOS = sample_photos()

# Chromium leaves a blob's bytes out of the request Playwright sees, so the page's fetch is
# wrapped to keep each /predict body's file: its size is what goes on the wire, less the
# multipart framing (a few hundred bytes).
RECORD_UPLOADS = """
window.uploads = [];
const send = window.fetch;
window.fetch = (url, init) => {
  if (init && init.body instanceof FormData) window.uploads.push(init.body.get("file"));
  return send(url, init);
};
"""
LAST_UPLOAD = """async () => {
  const file = window.uploads[window.uploads.length - 1];
  return [window.uploads.length, file.size, Array.from(new Uint8Array(await file.arrayBuffer()))];
}"""

# True once the first card shows its answer, with a "send the original" button or without.
ANSWERED = """(offered) => {
  const card = document.querySelector(".card");
  return card !== null && card.querySelectorAll("li").length === 3
    && (card.querySelector("button.original") !== null) === offered;
}"""


def last_upload(page) -> tuple[int, bytes]:  # noqa: F811
    """How many uploads the page has sent, and the bytes of the last one's file."""
    count, size, data = page.evaluate(LAST_UPLOAD)
    assert size == len(data)
    return count, bytes(data)


@pytest.mark.skipif(not PHOTOS, reason="../shared/imagenet-samples is not present")
def test_a_12mp_photo_is_sent_downsized_then_in_full_on_request(page, tmp_path):  # noqa: F811
    path = tmp_path / "phone.jpg"
    path.write_bytes(phone_jpeg(PHOTOS[0], PHONE_12MP, orientation=6))  # portrait, stored sideways
    page.add_init_script(RECORD_UPLOADS)
    page.reload()
    page.set_input_files("#file", str(path))
    page.wait_for_function(ANSWERED, arg=True, timeout=60_000)
    count, sent = last_upload(page)
    assert count == 1 and len(sent) < 500_000
    assert Image.open(io.BytesIO(sent)).size == (512, 683)  # upright, short side 2 x 256
    page.wait_for_function("() => document.querySelector('.card img').naturalWidth > 0")
    preview = "() => { const i = document.querySelector('.card img');"
    preview += " return [i.naturalWidth, i.naturalHeight]; }"
    assert page.evaluate(preview) == [3024, 4032]  # the card shows the original
    page.screenshot(path=str(tmp_path / "downsized.png"), full_page=True)

    page.locator(".card button.original").click()
    page.wait_for_function(ANSWERED, arg=False, timeout=60_000)
    assert last_upload(page) == (2, path.read_bytes())
    assert page.locator(".card .sent").inner_text().endswith("MB")
