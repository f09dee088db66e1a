"""The demo page in a real browser: Debian's headless Chromium driven by Playwright (no browser download). A bad
upload shows a message in the page; then a photograph is uploaded, reconstructed and shown. Screenshots are kept in
tests/artifacts/ (git-ignored)."""

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


def test_bad_upload_shows_a_message(browser, url, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("this is text, not a picture\n")
    page = _open(browser, url)
    page.locator("#image-input input[type=file]").set_input_files(str(fake))
    expect(page.locator("#image-input")).to_contain_text("notes.png", timeout=15_000)
    page.locator("#image-run").click()
    message = page.get_by_text("is not an image this demo can read").first
    expect(message).to_be_visible(timeout=30_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo_bad_upload.png"))
    assert "Traceback" not in page.content()
    page.close()


def test_upload_reconstruct_and_show(browser, url):
    page = _open(browser, url)  # a fresh page after the failed request: the server still answers
    page.locator("#image-input input[type=file]").set_input_files(skimage_file("chelsea.png"))
    expect(page.locator("#image-input")).to_contain_text("chelsea.png", timeout=15_000)
    page.locator("#image-run").click()
    shown = page.locator("#image-continuous img")
    expect(shown).to_be_visible(timeout=60_000)
    page.wait_for_function("() => { const i = document.querySelector('#image-continuous img');"
                           " return i && i.complete && i.naturalWidth > 0; }", timeout=30_000)
    size = shown.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    assert size == [451, 300]
    expect(page.locator("#image-metrics")).to_contain_text("psnr", timeout=10_000)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "demo_image.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()
