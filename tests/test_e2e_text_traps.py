"""Your text as a person uses it, in a real headless Chromium (tiny model): a text pasted over one whose
chips were clicked starts with its own blanks only, and Run fills exactly those."""

import re

import pytest
from conftest import launched_app
from test_e2e import open_page, open_tab
from test_e2e_page import chips

pytestmark = pytest.mark.browser

SLOW = 60_000  # ms: two busy cores


@pytest.fixture(scope="module")
def page_url():
    with launched_app("tiny") as (url, _):
        yield url


def test_a_text_pasted_over_a_clicked_one_keeps_none_of_its_masks(page_url, browser):
    from playwright.sync_api import expect

    page = open_page(browser, page_url)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    open_tab(page, "Your text")
    box = page.locator("#text textarea")
    box.fill("The cat sat on the mat")
    box.press_sequentially(".")  # a key typed as a person does
    expect(page.locator("#picker")).to_contain_text("mat.", timeout=15_000)
    # mask " cat" and the final "." by clicking their chips
    page.locator("#picker .chip", has_text="cat").click()
    page.locator("#picker .chip").filter(has_text=re.compile(r"^\.$")).click()
    expect(page.locator("#picker .tp-count")).to_have_text(re.compile(r"· 2 open$"))
    assert [text for text, m in chips(page) if m] == [" cat", "."]
    # select the whole text and paste another one over it: it shares only its final "."
    page.evaluate("() => navigator.clipboard.writeText('My neighbour [MASK:3] a big dog.')")
    box.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Control+V")
    expect(box).to_have_value("My neighbour [MASK:3] a big dog.")
    expect(page.locator("#picker")).to_contain_text("neighbour", timeout=15_000)
    expect(page.locator("#picker .tp-count")).to_have_text(re.compile(r"· 3 open$"))
    assert [text for text, m in chips(page) if m] == ["?"] * 3  # its own blanks, and no "."
    # Run fills the three blanks, and only them
    page.locator("#method label", has_text="A3 plan").click()
    page.locator("#run-btn").click()
    expect(page.locator(".a3s-headline")).to_contain_text("A3 plan (left to right): 3 model calls for 3 tokens",
                                                          timeout=SLOW)
    expect(page.locator("#stage-counter")).to_have_text("Step 3/3", timeout=SLOW)
    page.close()
