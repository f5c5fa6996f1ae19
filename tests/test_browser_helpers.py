"""The page tests' own helpers (tests.browser): waiting for a navigation survives chromedriver's
answers about an element of a document being replaced."""

from __future__ import annotations

import pytest
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

from tests.browser import gone


class _Element:
    """Stands for a WebElement whose ``is_enabled`` answers as chromedriver did."""

    def __init__(self, error: Exception | None):
        self.error = error

    def is_enabled(self) -> bool:
        if self.error:
            raise self.error
        return True


def test_an_element_still_in_the_page_is_not_gone():
    assert gone(_Element(None))(None) is False


def test_a_stale_element_is_gone():
    assert gone(_Element(StaleElementReferenceException("stale element reference")))(None) is True


def test_chromedrivers_mid_navigation_answer_counts_as_gone():
    # The message of a CI failure (chromium 156): a plain unknown error, not a stale element.
    error = WebDriverException('unknown error: unhandled inspector error: {"code":-32000,'
                               '"message":"Node with given id does not belong to the document"}')
    assert gone(_Element(error))(None) is True


def test_any_other_driver_error_is_raised():
    with pytest.raises(WebDriverException):
        gone(_Element(WebDriverException("unknown error: session deleted")))(None)
