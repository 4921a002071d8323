"""The dashboard in headless Chromium against a lab of real TCG guests: sign
in, one cell per instance in its update domain's row, a rolling upgrade
started from the page watched batch by batch until Completed (with the
screenshot the README shows), and a second upgrade cancelled from the page."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from bench.scalesets import custom_script, http_probe, scale_set_body
from images.tiny.build import build as build_image
from tests.agentproc import REPO
from tests.controller.ui import browser
from tests.guestlab import HTTPD_PER_BOOT, TOKEN, GuestLab, guest_lab, wait_until

pytestmark = pytest.mark.guest

IMAGES = REPO / "build" / "images"
SCREENSHOT = REPO / "docs" / "img" / "dashboard.png"
CAPACITY = 4
IN_FLIGHT = ("reimaging", "waiting")
SERVICE = HTTPD_PER_BOOT


@pytest.fixture(scope="module")
def lab() -> Iterator[GuestLab]:
    for v in ("1", "2"):
        build_image(v, IMAGES / f"tiny-{v}")
    with guest_lab("ui") as lab:
        lab.publish(IMAGES / "tiny-1", "tiny", "1")
        lab.add_hosts()
        body = scale_set_body(
            CAPACITY,
            ("kvmss", "tiny", "1"),
            prefix="web",
            probe=http_probe(interval=2, probes=2),
            extensions=[custom_script("service", SERVICE)],
            automatic=False,
            # (a batch may not be more than the unhealthy share allowed)
            max_unhealthy_percent=50,
            max_unhealthy_upgraded_percent=50,
        )
        lab.call("PUT", "/v1/scaleSets/web", json={"location": "local", **body})
        wait_until(
            lambda: (
                len(vms := lab.vms("web")) == CAPACITY
                and all(v["health"] == "Healthy" for v in vms)
            ),
            420,
            f"{CAPACITY} healthy instances",
            explain=lambda: lab.describe("web"),
        )
        lab.publish(IMAGES / "tiny-2", "tiny", "2")
        yield lab


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    with browser.chromium() as d:
        yield d


def act(driver: WebDriver, button: str) -> None:
    browser.click(driver, button)
    browser.wait(driver).until(lambda d: d.switch_to.alert)
    driver.switch_to.alert.accept()
    browser.wait(driver).until(lambda d: "accepted" in browser.text(d, "action-result"))


def watch_upgrade(driver: WebDriver, timeout: float) -> list[dict[str, tuple[str, str, str]]]:
    """What the page showed, sample by sample, until the upgrade ended."""
    samples = []
    shot = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = browser.cells(driver)
        samples.append(now)
        if not shot and any(s in IN_FLIGHT for _, s, _ in now.values()):
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            # The heatmap is at the top; the action buttons scrolled the page down.
            driver.execute_script("window.scrollTo(0, 0)")
            driver.save_screenshot(str(SCREENSHOT))
            shot = True
        if browser.text(driver, "upgrade-code") != "RollingForward":
            return samples
        time.sleep(0.5)
    raise AssertionError(f"the upgrade did not end within {timeout} s: {samples[-1]}")


def test_an_upgrade_from_the_dashboard_batch_by_batch_then_a_cancelled_one(
    lab: GuestLab, driver: WebDriver
) -> None:
    browser.sign_in(driver, lab.url, TOKEN)
    driver.get(f"{lab.url}/ui/#/set/web")
    browser.wait(driver).until(lambda d: len(browser.cells(d)) == CAPACITY)
    first = browser.cells(driver)
    assert {i: ud for i, (ud, _, _) in first.items()} == {str(i): str(i) for i in range(CAPACITY)}
    assert all(s == "healthy" and "v1" in t for _, s, t in first.values())

    driver.execute_script("document.getElementById('batch-percent').value = '50'")
    act(driver, "start-upgrade")
    browser.wait(driver).until(lambda d: d.find_elements(By.ID, "upgrade-code"))
    samples = watch_upgrade(driver, 900)
    assert browser.text(driver, "upgrade-code") == "Completed"
    latest: dict[str, Any] = lab.call("GET", "/v1/scaleSets/web/rollingUpgrades/latest")
    batches = latest["kvmss"]["batches"]
    # 50% of 4 allows batches of 2, but a batch never spans update domains
    # (docs/design.md rule 6) and each instance here has its own: 4 batches.
    assert batches == [[str(i)] for i in range(CAPACITY)]
    assert latest["properties"]["policy"]["maxBatchInstancePercent"] == 50

    def saw(moving: list[str], done: list[str], waiting: list[str]) -> bool:
        return any(
            any(s[i][1] in IN_FLIGHT for i in moving)
            and all("v2" in s[i][2] for i in done)
            and all(s[i][1] == "healthy" and "v1" in s[i][2] for i in waiting)
            for s in samples
        )

    # The page saw each batch in flight while the earlier ones were done and
    # the later ones still on version 1 and not touched.
    for k, batch in enumerate(batches):
        done = [i for b in batches[:k] for i in b]
        waiting = [i for b in batches[k + 1 :] for i in b]
        assert saw(batch, done, waiting), (k, samples)
    browser.wait(driver).until(
        lambda d: all(s == "healthy" and "v2" in t for _, s, t in browser.cells(d).values())
    )
    assert "Completed" in browser.text(driver, "history")
    assert SCREENSHOT.stat().st_size > 10_000

    # A second upgrade (the model back to version 1) cancelled from the page.
    first_id = latest["kvmss"]["upgradeId"]
    driver.execute_script("document.getElementById('image-version').value = '1'")
    act(driver, "change-image")
    browser.wait(driver, 30).until(lambda d: browser.text(d, "upgrade-code") == "RollingForward")
    act(driver, "cancel-upgrade")
    browser.wait(driver, 600).until(lambda d: browser.text(d, "upgrade-code") == "Cancelled")
    latest = lab.call("GET", "/v1/scaleSets/web/rollingUpgrades/latest")
    assert latest["kvmss"]["upgradeId"] != first_id
    assert latest["properties"]["runningStatus"]["code"] == "Cancelled"
    assert browser.requested_hosts(driver) == {lab.url.removeprefix("http://")}
