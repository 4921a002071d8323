"""The dashboard's session, CSRF and headers over real HTTP, and the live
snapshot shared by every poller; a served controller with simulated agents."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from controller.ui.pages import CSP
from controller.ui.sessions import Sessions
from controller.ui.snapshot import FRESH_SECONDS, Snapshots
from kvmss.base.clock import FakeClock
from tests.controller.ui.simlab import SET, TOKEN, SimLab, sim_lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimLab]:
    with sim_lab(tmp_path_factory.mktemp("ui")) as lab:
        yield lab


def signed_in(lab: SimLab) -> tuple[requests.Session, str]:
    s = requests.Session()
    r = s.post(lab.served.url + "/ui/api/session", json={"token": TOKEN}, timeout=30)
    assert r.status_code == 200, r.text
    return s, r.json()["csrf"]


def model_version(lab: SimLab) -> str:
    b = lab.served.ok("GET", f"/v1/scaleSets/{SET}")
    return str(
        b["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]["version"]
    )


def test_the_token_is_exchanged_for_an_httponly_strict_cookie_with_an_expiry(lab: SimLab) -> None:
    r = requests.post(lab.served.url + "/ui/api/session", json={"token": TOKEN}, timeout=30)
    cookie = r.headers["set-cookie"]
    assert "kvmss_session=" in cookie and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Max-Age=28800" in cookie and "Path=/ui" in cookie
    assert TOKEN not in cookie and TOKEN not in r.text


def test_a_wrong_token_is_refused_and_gives_no_session(lab: SimLab) -> None:
    s = requests.Session()
    r = s.post(lab.served.url + "/ui/api/session", json={"token": TOKEN + "x"}, timeout=30)
    assert r.status_code == 401 and "set-cookie" not in r.headers
    assert s.get(lab.served.url + "/ui/api/live", timeout=30).status_code == 401


def test_the_bearer_token_alone_does_not_open_the_dashboard(lab: SimLab) -> None:
    r = lab.served.call("GET", "/ui/api/live")
    assert r.status_code == 401


def test_an_action_without_the_csrf_token_is_403_and_changes_nothing(lab: SimLab) -> None:
    s, csrf = signed_in(lab)
    before = model_version(lab)
    url = f"{lab.served.url}/ui/api/sets/{SET}/image"
    for headers in ({}, {"X-CSRF-Token": csrf + "x"}):
        r = s.post(url, json={"version": "2"}, headers=headers, timeout=30)
        assert r.status_code == 403, r.text
        assert "X-CSRF-Token" in r.json()["error"]["message"]
    r = s.post(
        f"{lab.served.url}/ui/api/sets/{SET}/upgrade",
        json={"maxBatchInstancePercent": 50},
        timeout=30,
    )
    assert r.status_code == 403
    assert model_version(lab) == before
    assert lab.served.call("GET", f"/v1/scaleSets/{SET}/rollingUpgrades/latest").status_code == 404


def test_every_page_carries_a_csp_of_the_controller_alone(lab: SimLab) -> None:
    for path in ("/ui/", "/ui/static/app.js", "/ui/static/app.css"):
        r = requests.get(lab.served.url + path, timeout=30)
        assert r.status_code == 200
        assert r.headers["content-security-policy"] == CSP
        assert r.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self';" in CSP and "unsafe" not in CSP
    assert requests.get(lab.served.url + "/ui/static/nope.js", timeout=30).status_code == 404


def test_sign_out_ends_the_session(lab: SimLab) -> None:
    s, csrf = signed_in(lab)
    assert s.delete(lab.served.url + "/ui/api/session", timeout=30).status_code == 403
    r = s.delete(lab.served.url + "/ui/api/session", headers={"X-CSRF-Token": csrf}, timeout=30)
    assert r.status_code == 200
    s.cookies.clear()
    assert s.get(lab.served.url + "/ui/api/live", timeout=30).status_code == 401


def test_the_live_snapshot_shows_one_cell_per_instance_and_answers_304_when_unchanged(
    lab: SimLab,
) -> None:
    s, _ = signed_in(lab)
    r = s.get(f"{lab.served.url}/ui/api/live?set={SET}", timeout=30)
    snap = r.json()
    cells = snap["set"]["cells"]
    assert sorted(int(c["id"]) for c in cells) == list(range(6))
    assert all(c["ud"] == int(c["id"]) % 5 and c["state"] == "healthy" for c in cells)
    assert snap["sets"] == []  # a scale set's page shows that one only
    overview = s.get(f"{lab.served.url}/ui/api/live", timeout=30).json()
    assert overview["set"] is None
    [summary] = overview["sets"]
    assert summary["capacity"] == 6 and summary["health"] == {"Healthy": 6}
    assert summary["mode"] == "Rolling" and summary["image"]["version"] == "latest"
    assert snap["images"][0]["versions"] == ["2", "1"]
    again = s.get(
        f"{lab.served.url}/ui/api/live?set={SET}",
        headers={"If-None-Match": r.headers["etag"]},
        timeout=30,
    )
    assert again.status_code in (200, 304)
    if again.status_code == 200:  # only when the snapshot was rebuilt and differs
        assert again.headers["etag"] != r.headers["etag"]


def test_ten_pollers_at_once_cost_one_build() -> None:
    clock = FakeClock()
    built: list[str] = []

    def build(name: str) -> dict[str, object]:
        built.append(name)
        time.sleep(0.05)  # long enough for the other nine to arrive meanwhile
        return {"set": name}

    snaps = Snapshots(clock, build)
    with ThreadPoolExecutor(10) as pool:
        tags = set(pool.map(lambda _: snaps.get("web").etag, range(10)))
    assert built == ["web"] and len(tags) == 1
    clock.advance(FRESH_SECONDS / 2)
    snaps.get("web")
    assert built == ["web"]
    clock.advance(FRESH_SECONDS)
    snaps.get("web")
    snaps.forget()
    snaps.get("web")
    assert built == ["web"] * 3


def test_a_session_expires() -> None:
    clock = FakeClock()
    sessions = Sessions("a-token-of-the-controller", clock, seconds=60)
    assert sessions.sign_in("wrong") is None
    s = sessions.sign_in("a-token-of-the-controller")
    assert s is not None and sessions.get(s.sid) == s
    assert sessions.csrf_ok(s, s.csrf) and not sessions.csrf_ok(s, None)
    clock.advance(61)
    assert sessions.get(s.sid) is None


def test_instance_details_name_the_os_disk_generation_and_extensions(lab: SimLab) -> None:
    s, _ = signed_in(lab)
    d = s.get(f"{lab.served.url}/ui/api/sets/{SET}/instances/3", timeout=30).json()
    assert d["instanceId"] == "3" and d["host"].startswith("sim")
    assert d["osDisk"]["generation"] >= 1 and d["osDisk"]["imageVersion"] == "1"
    assert d["extensions"][0]["name"] == "app"
    r = s.get(f"{lab.served.url}/ui/api/sets/{SET}/instances/99", timeout=30)
    assert r.status_code == 404


def test_a_batch_larger_than_the_policy_allows_is_refused_naming_the_field(lab: SimLab) -> None:
    s, csrf = signed_in(lab)
    r = s.post(
        f"{lab.served.url}/ui/api/sets/{SET}/upgrade",
        json={"maxBatchInstancePercent": 50},
        headers={"X-CSRF-Token": csrf},
        timeout=30,
    )
    assert r.status_code == 400 and "maxBatchInstancePercent" in r.json()["error"]["message"]
    assert lab.served.call("GET", f"/v1/scaleSets/{SET}/rollingUpgrades/latest").status_code == 404
