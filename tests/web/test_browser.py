"""The search page end to end: headless Debian chromium (driven by Playwright) against `vmfml serve`.

Uploads a gallery image, sees its neighbours' thumbnails appear (the image itself first), clicks
one and sees a new result set, changes k, provokes an error, and checks the page never asked
anything of a host other than the server. Leaves a screenshot at /tmp/vmfml_serve.png.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = Path("/tmp/vmfml_serve.png")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip(f"chromium is not installed at {CHROMIUM} (scripts/setup.sh installs it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def result_ids(page) -> list[int]:  # noqa: ANN001
    return [
        int(x)
        for x in page.eval_on_selector_all("#results .result", "els => els.map(e => e.dataset.id)")
    ]


def wait_for_thumbnails(page, selector: str, count: int) -> None:  # noqa: ANN001
    """Wait until `count` elements match and every image in them has loaded pixels."""
    page.wait_for_function(
        """([sel, n]) => {
            const imgs = [...document.querySelectorAll(sel + ' img')];
            return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0);
        }""",
        arg=[selector, count],
        timeout=20_000,
    )


def test_upload_then_click_a_neighbour(browser, live_server: str, gallery, tmp_path: Path) -> None:  # noqa: ANN001
    # The page's Content-Security-Policy forbids eval, which Playwright's polling predicates use;
    # the header is checked in test_api. Requests to other hosts are watched below instead.
    page = browser.new_page(viewport={"width": 1200, "height": 900}, bypass_csp=True)
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.goto(live_server + "/")
    page.wait_for_function(
        "document.querySelector('#index-info').textContent.includes('60 images')"
    )
    wait_for_thumbnails(page, "#gallery", 16)

    # Upload gallery image 17: its neighbours appear, itself first with score 1.000.
    page.set_input_files("#file-input", str(gallery.paths[17]))
    wait_for_thumbnails(page, "#results", 12)
    first = result_ids(page)
    assert first[0] == 17
    assert page.inner_text("#results .result:first-child .score") == "1.000"
    assert page.inner_text("#results .result:first-child .label") == gallery.labels[17]
    assert "neighbours of" in page.inner_text("#status")
    assert page.is_visible("#query-preview")

    # Click the third result: a new result set, from that item, without the item itself.
    clicked = first[2]
    page.click("#results .result:nth-child(3) button")
    page.wait_for_function(
        f"document.querySelector('#status').textContent.includes('item #{clicked}')"
    )
    wait_for_thumbnails(page, "#results", 12)
    second = result_ids(page)
    assert second != first and clicked not in second
    assert f"gallery item #{clicked}" in page.inner_text("#query-info")

    # k selector: 24 neighbours of the same item.
    page.select_option("#k-select", "24")
    wait_for_thumbnails(page, "#results", 24)
    assert result_ids(page)[:12] == second

    # A gallery strip pick searches too.
    page.click("#gallery .gallery-item:first-child")
    page.wait_for_function(
        "document.querySelector('#status').textContent.includes('neighbours of item #')"
    )
    wait_for_thumbnails(page, "#results", 24)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    # A file that is not an image: the server's 415 shows in the error banner.
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    page.set_input_files("#file-input", str(text))
    page.wait_for_selector("#error:not([hidden])")
    assert "415" in page.inner_text("#error-text") and "not an image" in page.inner_text(
        "#error-text"
    )
    page.click("#error-close")
    assert page.is_hidden("#error")

    # Nothing was asked of any other host (no CDN, no font, no analytics).
    outside = [u for u in requested if not u.startswith((live_server, "blob:", "data:"))]
    assert outside == []
    assert [e for e in console_errors if "415" not in e] == []
    page.close()


def test_the_page_asks_for_the_api_key_once(browser, start_server, gallery) -> None:  # noqa: ANN001
    """A server with a key (from VMFML_API_KEY): the page asks on the first 401, keeps the key for
    the tab, and every request after it (searches, thumbnails) carries it."""
    key = "browser-test-key-0123456789"
    with start_server(env={"VMFML_API_KEY": key}) as base:
        page = browser.new_page(viewport={"width": 1200, "height": 900}, bypass_csp=True)
        prompts: list[str] = []

        def answer(dialog) -> None:  # noqa: ANN001
            prompts.append(dialog.message)
            dialog.accept(key)

        page.on("dialog", answer)
        page.goto(base + "/")
        wait_for_thumbnails(page, "#gallery", 16)
        assert len(prompts) == 1 and "API key" in prompts[0]
        assert page.evaluate("sessionStorage.getItem('vmfml-api-key')") == key
        page.set_input_files("#file-input", str(gallery.paths[17]))
        wait_for_thumbnails(page, "#results", 12)
        assert result_ids(page)[0] == 17
        page.click("#results .result:nth-child(2) button")
        page.wait_for_function("document.querySelector('#status').textContent.includes('item #')")
        wait_for_thumbnails(page, "#results", 12)
        assert page.is_hidden("#error") and len(prompts) == 1
        page.close()


def test_the_page_names_the_class_or_says_unknown(
    browser, start_server, gallery, tmp_path: Path
) -> None:  # noqa: ANN001
    """With a classifier (--classifier), an uploaded image gets its class and probability, and an
    image of a class the classifier never saw, which it rejects, gets "not in the known
    classes", as /api/classify answers."""
    import httpx
    from test_classify_api import UNSEEN, fit_gallery_classifier

    path = fit_gallery_classifier(gallery, tmp_path / "classifier.pt")
    with start_server("--classifier", str(path)) as base:
        answers = {}
        for i in range(len(gallery.paths)):
            with open(gallery.paths[i], "rb") as f:
                data = httpx.post(f"{base}/api/classify", files={"file": ("q.png", f)}).json()
            if data["known"] or gallery.labels[i] in UNSEEN:  # the unknown: of an unseen class
                answers.setdefault(data["known"], (i, data))
        assert set(answers) == {True, False}, "no image of each kind to show"
        page = browser.new_page(bypass_csp=True)
        page.goto(base + "/")
        page.wait_for_function("document.querySelector('#index-info').textContent.includes('60')")
        for known, (i, data) in answers.items():
            page.set_input_files("#file-input", str(gallery.paths[i]))
            page.wait_for_selector("#class-info:not([hidden])")
            text = page.inner_text("#class-info")
            if known:
                assert text.startswith(f"class: {data['class']} · probability")
            else:
                assert text.startswith("not in the known classes")
            page.set_input_files("#file-input", str(tmp_path / "classifier.pt"))  # not an image
            page.wait_for_selector("#error:not([hidden])")
            assert page.is_hidden("#class-info")
            page.click("#error-close")
        page.close()


def test_label_filter_and_add_to_gallery(browser, serve_index, gallery, tmp_path: Path) -> None:  # noqa: ANN001
    """Over `vmfml serve --writable` on a copy of the index: the label filter narrows an image
    search, and "add to gallery" adds the uploaded image (embedded by the server)."""
    import dataclasses

    import httpx

    copy = dataclasses.replace(gallery, index_dir=tmp_path / "index")
    shutil.copytree(gallery.index_dir, copy.index_dir)
    with serve_index(copy, "--writable") as base:
        page = browser.new_page(viewport={"width": 1200, "height": 900}, bypass_csp=True)
        page.goto(base + "/")
        page.wait_for_function(
            "document.querySelector('#index-info').textContent.includes('60 images')"
        )
        label = gallery.labels[40]
        page.fill("#label-filter", label)
        page.set_input_files("#file-input", str(gallery.paths[17]))  # of another class
        wait_for_thumbnails(page, "#results", 6)  # the 6 items with that label, no more
        assert {gallery.labels[i] for i in result_ids(page)} == {label}

        page.click("#add-to-gallery")
        page.wait_for_function(
            "document.querySelector('#query-info').textContent.includes('item #60')"
        )
        page.wait_for_function(
            "document.querySelector('#index-info').textContent.includes('61 images')"
        )
        item = httpx.get(f"{base}/api/items/60").json()
        assert item["path"] == gallery.paths[17].name
        hits = httpx.get(f"{base}/api/search/item/17", params={"k": 1}).json()["results"]
        assert hits[0]["id"] == 60 and hits[0]["score"] > 0.9999


def test_the_rerank_select_sends_the_chosen_expansion(browser, live_server: str, gallery) -> None:  # noqa: ANN001
    """Choosing alpha-qe on the page re-runs the search with it: the page shows what the API
    answers for `?rerank=alpha-qe`, not the plain search (whose scores differ)."""
    import httpx

    def answer(**params: str) -> list[tuple[int, str]]:
        with open(gallery.paths[17], "rb") as f:
            body = httpx.post(
                f"{live_server}/api/search/image",
                params={"k": 12, **params},
                files={"file": ("q.png", f)},
            ).json()
        return [(h["id"], f"{h['score']:.3f}") for h in body["results"]]

    expanded, plain = answer(rerank="alpha-qe"), answer()
    assert expanded != plain
    page = browser.new_page(viewport={"width": 1200, "height": 900}, bypass_csp=True)
    page.goto(live_server + "/")
    page.wait_for_function("document.querySelector('#index-info').textContent.includes('60')")
    page.set_input_files("#file-input", str(gallery.paths[17]))
    wait_for_thumbnails(page, "#results", 12)
    page.select_option("#rerank-select", "alpha-qe")
    scores = "els => els.map(e => e.textContent)"
    page.wait_for_function(
        """want => JSON.stringify([...document.querySelectorAll('#results .score')]
                                 .map(e => e.textContent)) === JSON.stringify(want)""",
        arg=[s for _, s in expanded],
        timeout=20_000,
    )
    assert result_ids(page) == [i for i, _ in expanded]
    assert page.eval_on_selector_all("#results .score", scores) == [s for _, s in expanded]
    page.close()
