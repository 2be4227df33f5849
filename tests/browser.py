"""A real browser for the tests that open our pages: Debian's headless Chromium and chromedriver
(`.ci/run` installs them); the tests skip without them."""
import shutil
from contextlib import contextmanager

import pytest


def chromium():
    """(browser, driver) paths, or None."""
    for browser, driver in (("chromium", "chromedriver"), ("chromium-browser", "chromedriver")):
        if shutil.which(browser) and shutil.which(driver):
            return shutil.which(browser), shutil.which(driver)
    return None


needs_chromium = pytest.mark.skipif(chromium() is None, reason="no Chromium and chromedriver (apt-get install "
                                                               "chromium chromium-driver; .ci/run installs them)")


@contextmanager
def headless(width: int = 900, height: int = 700):
    """A headless Chromium driven by selenium, that keeps the console's messages (`get_log("browser")`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    browser, driver_path = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
