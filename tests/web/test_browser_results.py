"""The search page in headless Debian chromium (as test_browser.py drives it): a failed search
leaves no earlier results on screen, and the gallery strip shows when it has more to scroll to."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


@pytest.fixture(scope="module")
def page(live_server: str) -> Iterator:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip(f"chromium is not installed at {CHROMIUM} (scripts/setup.sh installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # bypass_csp: Playwright's polling predicates use eval, which the page's CSP forbids.
        page = browser.new_page(viewport={"width": 900, "height": 800}, bypass_csp=True)
        page.goto(live_server + "/")
        page.wait_for_function("document.querySelectorAll('#gallery img').length === 16")
        yield page
        browser.close()


def test_a_failed_upload_clears_the_previous_results(page, gallery, tmp_path: Path) -> None:  # noqa: ANN001
    page.set_input_files("#file-input", str(gallery.paths[3]))
    page.wait_for_function("document.querySelectorAll('#results .result').length === 12")
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    page.set_input_files("#file-input", str(text))
    page.wait_for_selector("#error:not([hidden])")
    assert "415" in page.inner_text("#error-text")
    assert page.eval_on_selector_all("#results .result", "els => els.length") == 0
    status = page.inner_text("#status")
    assert "search failed" in status and "notes.txt" in status
    page.click("#error-close")
    # A good search afterwards fills the list again.
    page.set_input_files("#file-input", str(gallery.paths[5]))
    page.wait_for_function("document.querySelectorAll('#results .result').length === 12")


def test_the_gallery_strip_shows_there_is_more(page) -> None:  # noqa: ANN001
    page.wait_for_function("document.querySelector('.strip-wrap').classList.contains('more-right')")
    assert page.is_visible(".strip-arrow.right") and page.is_hidden(".strip-arrow.left")
    fade = page.evaluate(
        "getComputedStyle(document.querySelector('.strip-wrap'), '::after').opacity"
    )
    assert float(fade) > 0
    page.click(".strip-arrow.right")
    page.wait_for_function("document.querySelector('#gallery').scrollLeft > 0")
    page.wait_for_function("document.querySelector('.strip-wrap').classList.contains('more-left')")
    assert page.is_visible(".strip-arrow.left")
    # Scrolled to the end: nothing more on the right.
    page.evaluate(
        "(() => { const s = document.querySelector('#gallery'); s.scrollLeft = s.scrollWidth; })()"
    )
    page.wait_for_function(
        "!document.querySelector('.strip-wrap').classList.contains('more-right')"
    )
    assert page.is_hidden(".strip-arrow.right")
    # Back at the start: nothing more on the left.
    page.evaluate("document.querySelector('#gallery').scrollLeft = 0")
    page.wait_for_function("!document.querySelector('.strip-wrap').classList.contains('more-left')")
    assert page.is_hidden(".strip-arrow.left") and page.is_visible(".strip-arrow.right")
