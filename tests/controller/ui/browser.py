"""Headless Debian Chromium driven by selenium through chromium-driver, with
the performance log on, so a test can list every request the page made."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

# Debian's packages (scripts/setup.sh installs them)
CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"


@contextmanager
def chromium(width: int = 1280, height: int = 800) -> Iterator[WebDriver]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # runs as root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",  # no update checks, no safe browsing
        "--disable-component-update",
        "--disable-sync",
        "--disable-features=Translate,OptimizationHints,MediaRouter",
        f"--window-size={width},{height}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def requested_hosts(driver: WebDriver) -> set[str]:
    """host:port of every request the page sent since the last call."""
    hosts = set()
    for entry in log(driver, "performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            url = msg["params"]["request"]["url"]
            parts = urlsplit(url)
            if parts.scheme in ("http", "https", "ws", "wss"):
                hosts.add(parts.netloc)
            elif parts.scheme not in ("data", "blob", "about"):
                hosts.add(url[:40])
    return hosts


def log(driver: WebDriver, kind: str) -> list[dict[str, Any]]:
    """The entries of one browser log since the last read ("performance", "browser")."""
    entries: list[dict[str, Any]] = driver.execute("getLog", {"type": kind})["value"]
    return entries


def sign_in(driver: WebDriver, url: str, token: str) -> None:
    driver.get(url + "/ui/")
    # A session cookie left by an earlier test resumes without the form.
    wait(driver).until(
        lambda d: (
            d.find_element(By.ID, "token").is_displayed()
            or d.find_element(By.ID, "signout").is_displayed()
        )
    )
    if driver.find_element(By.ID, "signout").is_displayed():
        return
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "signin-button").click()
    wait(driver).until(lambda d: d.find_element(By.ID, "signout").is_displayed())


def wait(driver: WebDriver, seconds: float = 20) -> WebDriverWait[WebDriver]:
    # (the page re-renders on every change: an element found may be replaced)
    return WebDriverWait(
        driver, seconds, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
    )


def cells(driver: WebDriver) -> dict[str, tuple[str, str, str]]:
    """Each heatmap cell: id -> (its row's group, state, its text), read at once."""
    got: list[list[str]] = driver.execute_script(
        "return [...document.querySelectorAll('#heatmap .cell')].map((c) =>"
        " [c.id.replace('cell-', ''), c.closest('.row').dataset.group, c.dataset.state,"
        " c.innerText]);"
    )
    return {i: (group, state, text) for i, group, state, text in got}


def text(driver: WebDriver, element_id: str) -> str:
    """The text of the element with that id now ("" if there is none)."""
    got: str = driver.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.innerText : '';",
        element_id,
    )
    return got


def click(driver: WebDriver, element_id: str) -> None:
    """Click the element with that id, finding it again if a re-render replaced it."""
    for _ in range(20):
        try:
            driver.find_element(By.ID, element_id).click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"#{element_id} kept being replaced")
