"""The demo page in a real browser: Debian's headless Chromium driven by Playwright (no browser download). A bad
upload shows a message in the page; then a photograph is uploaded (previewed in the image box), reconstructed and
shown in the before/after slider, with the scores table below the button. Screenshots are kept in tests/artifacts/
(git-ignored)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).parent / "artifacts"

if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does it when it may)",
                allow_module_level=True)
pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed (test extra)")
pytest.importorskip("gradio")

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from tests.test_demo import launch_demo, skimage_file  # noqa: E402


@pytest.fixture(scope="module")
def url(tmp_path_factory, converted_dirs, parity_dir):
    app, url, _ = launch_demo(tmp_path_factory.mktemp("demo"), converted_dirs, parity_dir, text_model=False)
    yield url
    app.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield chromium
        chromium.close()


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.goto(url, wait_until="domcontentloaded")
    expect(page.locator("#image-run")).to_be_visible(timeout=30_000)
    return page


def _upload(page, path: str) -> None:
    page.locator("#image-input input[type=file]").set_input_files(path)
    # gr.Image shows the upload as a preview <img> once it is on the server
    expect(page.locator("#image-input img")).to_have_count(1, timeout=15_000)


def test_bad_upload_shows_a_message(browser, url, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is text, not a picture\n")
    page = _open(browser, url)
    _upload(page, str(fake))
    page.locator("#image-run").click()
    message = page.get_by_text("is not an image this demo can read").first
    expect(message).to_be_visible(timeout=30_000)
    page.wait_for_timeout(800)  # the toast flies in: "visible" is true before it is drawn in place
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo_bad_upload.png"))
    assert "Traceback" not in page.content()
    page.close()


def _loaded_sizes(page, selector: str) -> list[list[int]]:
    """[naturalWidth, naturalHeight] of the images under ``selector``, once all of them have loaded."""
    page.wait_for_function(f"() => {{ const s = [...document.querySelectorAll({selector!r})];"
                           " return s.length > 0 && s.every(i => i.complete && i.naturalWidth > 0); }",
                           timeout=30_000)
    return page.locator(selector).evaluate_all("s => s.map(i => [i.naturalWidth, i.naturalHeight])")


def _choose_model(page, label: str) -> None:
    page.locator("#model input").click()
    page.get_by_role("option", name=label).click()
    expect(page.locator("#model input")).to_have_value(label)


def test_upload_reconstruct_and_show(browser, url):
    page = _open(browser, url)  # a fresh page after the failed request: the server still answers
    _choose_model(page, "atoken-small-d (embedded, FSQ tokens)")  # the embedded FSQ model, named plainly
    page.set_viewport_size({"width": 1400, "height": 1700})  # the whole tab in view: the screenshot shows it as is
    _upload(page, skimage_file("chelsea.png"))
    assert _loaded_sizes(page, "#image-input img") == [[451, 300]]  # the preview of the upload
    page.locator("#image-run").click()
    # The before/after slider: both pictures at full size, the "after" one clipped at the handle.
    slider = page.locator("#image-slider")
    expect(slider.locator("img")).to_have_count(2, timeout=120_000)
    assert _loaded_sizes(page, "#image-slider img") == [[451, 300], [451, 300]]
    after = slider.locator("img").nth(1)
    assert "50%" in after.evaluate("i => i.style.clipPath")
    handle = slider.get_by_test_id("slider").bounding_box()
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    page.mouse.down()
    page.mouse.move(handle["x"] - 100, handle["y"] + handle["height"] / 2, steps=5)
    page.mouse.up()
    assert "50%" not in after.evaluate("i => i.style.clipPath")  # dragging moves the split
    expect(page.locator("#image-slider-fsq img")).to_have_count(2)
    # The scores table: one row per reconstruction of this FSQ model.
    table = page.locator("#image-metrics")
    for text in ("PSNR (dB)", "SSIM", "latent grid", "continuous", "FSQ tokens", "8 codebooks x 131072 codes"):
        expect(table).to_contain_text(text, timeout=10_000)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "demo_image.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    page.close()
