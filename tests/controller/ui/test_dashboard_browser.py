"""The dashboard in headless Chromium against a served controller with
simulated agents: sign-in, a wrong token refused, the heatmap's rows,
an instance's details, keyboard navigation, phone width, and no request
to any host but the controller."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.controller.ui import browser
from tests.controller.ui.simlab import CAPACITY, SET, TOKEN, SimLab, sim_lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimLab]:
    with sim_lab(tmp_path_factory.mktemp("ui")) as lab:
        yield lab


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    with browser.chromium() as d:
        yield d


def test_a_wrong_token_is_refused(lab: SimLab, driver: WebDriver) -> None:
    driver.delete_all_cookies()
    driver.get(lab.served.url + "/ui/")
    browser.wait(driver).until(lambda d: d.find_element(By.ID, "token").is_displayed())
    driver.find_element(By.ID, "token").send_keys("not-the-token")
    driver.find_element(By.ID, "signin-button").click()
    browser.wait(driver).until(lambda d: "refused" in d.find_element(By.ID, "signin-error").text)
    assert not driver.find_element(By.ID, "signout").is_displayed()
    assert driver.find_elements(By.CSS_SELECTOR, "#sets") == []


def test_sign_in_shows_the_scale_sets_and_the_catalog(lab: SimLab, driver: WebDriver) -> None:
    browser.sign_in(driver, lab.served.url, TOKEN)
    browser.wait(driver).until(lambda d: d.find_elements(By.ID, "set-" + SET))
    row = driver.find_element(By.CSS_SELECTOR, "#sets tbody tr").text
    assert SET in row and str(CAPACITY) in row and "Rolling" in row and "dash/tiny/1" in row
    assert "2, 1" in driver.find_element(By.ID, "images").text
    # Signed in, the sign-in form is gone and sign-out is offered.
    assert not driver.find_element(By.ID, "signin").is_displayed()
    assert driver.find_element(By.ID, "signout").is_displayed()
    cookie = driver.get_cookie("kvmss_session")
    assert cookie is not None and cookie["httpOnly"] is True
    assert driver.execute_script("return document.cookie") == ""


def test_the_heatmap_has_one_cell_per_instance_in_its_update_domain_row(
    lab: SimLab, driver: WebDriver
) -> None:
    browser.sign_in(driver, lab.served.url, TOKEN)
    driver.get(f"{lab.served.url}/ui/#/set/{SET}")
    browser.wait(driver).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".cell")) == CAPACITY)
    rows = driver.find_elements(By.CSS_SELECTOR, "#heatmap .row")
    seen = {}
    for row in rows:
        for cell in row.find_elements(By.CSS_SELECTOR, ".cell"):
            seen[cell.get_attribute("id")] = row.get_attribute("data-group")
            assert "healthy" in cell.text and "v1" in cell.text  # text, not colour alone
    assert seen == {f"cell-{i}": str(i % 5) for i in range(CAPACITY)}
    driver.find_element(By.ID, "group-toggle").click()
    groups = {
        r.get_attribute("data-group")
        for r in driver.find_elements(By.CSS_SELECTOR, "#heatmap .row")
    }
    assert groups == {"sim000", "sim001"}
    driver.find_element(By.ID, "group-toggle").click()


def test_keyboard_alone_signs_in_and_opens_an_instance(lab: SimLab, driver: WebDriver) -> None:
    driver.delete_all_cookies()
    driver.get("about:blank")  # a load, not a hash change
    driver.get(f"{lab.served.url}/ui/#/set/{SET}")
    browser.wait(driver).until(lambda d: d.switch_to.active_element.get_attribute("id") == "token")
    active = driver.switch_to.active_element
    active.send_keys(TOKEN, Keys.ENTER)
    browser.wait(driver).until(lambda d: d.find_elements(By.ID, "cell-0"))
    for _ in range(60):  # Tab through the page to the first cell
        if driver.switch_to.active_element.get_attribute("id") == "cell-0":
            break
        driver.switch_to.active_element.send_keys(Keys.TAB)
    assert driver.switch_to.active_element.get_attribute("id") == "cell-0"
    driver.switch_to.active_element.send_keys(Keys.ENTER)
    browser.wait(driver).until(lambda d: "Instance #0" in d.find_element(By.ID, "details").text)
    text = driver.find_element(By.ID, "details").text
    assert "generation" in text and "app: " in text and "exit 0" in text
    assert driver.switch_to.active_element.get_attribute("id") == "details-title"


def test_the_page_reaches_no_host_but_the_controller(lab: SimLab, driver: WebDriver) -> None:
    browser.requested_hosts(driver)  # drop what came before
    browser.sign_in(driver, lab.served.url, TOKEN)
    driver.get(f"{lab.served.url}/ui/#/set/{SET}")
    browser.wait(driver).until(lambda d: d.find_elements(By.ID, "cell-0"))
    driver.find_element(By.ID, "cell-1").click()
    browser.wait(driver).until(lambda d: "Instance #1" in d.find_element(By.ID, "details").text)
    hosts = browser.requested_hosts(driver)
    assert hosts == {f"127.0.0.1:{lab.served.port}"}
    # (a 401 the sign-in check answers is logged by source "network")
    errors = [
        e for e in browser.log(driver, "browser") if e["source"] in ("javascript", "security")
    ]
    assert errors == []  # nothing the CSP refused, no script error


def test_phone_width_keeps_every_cell_on_screen(lab: SimLab, driver: WebDriver) -> None:
    driver.set_window_size(390, 844)
    try:
        browser.sign_in(driver, lab.served.url, TOKEN)
        driver.get(f"{lab.served.url}/ui/#/set/{SET}")
        browser.wait(driver).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".cell")) == CAPACITY
        )
        width = driver.execute_script("return document.documentElement.clientWidth")
        scroll = driver.execute_script("return document.documentElement.scrollWidth")
        assert scroll <= width
        for cell in driver.find_elements(By.CSS_SELECTOR, ".cell"):
            assert cell.rect["x"] + cell.rect["width"] <= width
    finally:
        driver.set_window_size(1280, 800)


def test_changing_the_image_version_asks_first_and_shows_live(
    lab: SimLab, driver: WebDriver
) -> None:
    browser.sign_in(driver, lab.served.url, TOKEN)
    driver.get(f"{lab.served.url}/ui/#/set/{SET}")
    browser.wait(driver).until(lambda d: d.find_elements(By.ID, "manual-ids"))
    driver.find_element(By.ID, "manual-ids").send_keys("UD 1")
    browser.click(driver, "manual-upgrade")
    driver.switch_to.alert.dismiss()  # declined: nothing happens
    assert lab.served.call("GET", f"/v1/scaleSets/{SET}/rollingUpgrades/latest").status_code == 404
    browser.click(driver, "manual-upgrade")
    driver.switch_to.alert.accept()
    browser.wait(driver, 90).until(lambda d: browser.text(d, "upgrade-code") == "Completed")
    latest = lab.served.ok("GET", f"/v1/scaleSets/{SET}/rollingUpgrades/latest")
    assert sorted(i["instanceId"] for i in latest["kvmss"]["instances"]) == ["1"]
