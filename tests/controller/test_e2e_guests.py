"""End to end on real TCG guests: a controller (its HTTP API, SQLite store and
catalog) and two real host agents, each its own "host" with its own bridge.

A scale set of 6 tiny-image instances with an HTTP health probe follows
``latest`` with automatic OS upgrades. Publishing version 2 upgrades all six
automatically, one at a time; publishing a version 3 whose guests never turn
healthy rolls the first instance back and ends Faulted, every instance left
on version 2 and healthy.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bench.scalesets import custom_script, http_probe, scale_set_body
from images.tiny.build import build as build_image
from tests.agentproc import REPO
from tests.guestlab import HTTPD_PER_BOOT, GuestLab, guest_lab, wait_until

pytestmark = pytest.mark.guest

IMAGES = REPO / "build" / "images"
# The service starts from a per-boot script, so it also comes back on a
# rollback; version 3 of the image "breaks" it (the upgrade must roll back).
SERVICE = (
    'if [ "$(cat /etc/os-version)" = 3 ]; then echo "no service on 3"; exit 0; fi; '
    + HTTPD_PER_BOOT
)


@pytest.fixture(scope="module")
def lab() -> Iterator[GuestLab]:
    for v in ("1", "2", "3"):
        build_image(v, IMAGES / f"tiny-{v}")
    with guest_lab("e2e") as lab:
        yield lab


def model() -> dict[str, Any]:
    return scale_set_body(
        6,
        ("kvmss", "tiny", "1"),
        prefix="web",
        data_disks=1,
        probe=http_probe(interval=2, probes=2),
        extensions=[custom_script("service", SERVICE)],
    )


def test_publish_upgrades_automatically_then_a_bad_version_rolls_back(lab: GuestLab) -> None:
    lab.publish(IMAGES / "tiny-1", "tiny", "1")
    lab.add_hosts()
    lab.call("PUT", "/v1/scaleSets/web", json=model())
    wait_until(
        lambda: len(vms := lab.vms("web")) == 6 and all(v["health"] == "Healthy" for v in vms),
        420,
        "6 healthy instances",
        explain=lambda: lab.describe("web"),
    )
    vms = lab.vms("web")
    assert {v["host"] for v in vms} == {"host1", "host2"}
    assert all(v["imageVersion"] == "1" for v in vms)

    # version 2: automatic, one at a time, Completed with 6 successful
    lab.publish(IMAGES / "tiny-2", "tiny", "2")
    wait_until(
        lambda: lab.call("GET", "/v1/scaleSets/web/osUpgradeHistory")["value"], 30, "an upgrade"
    )
    latest, worst = lab.watch_upgrade("web", 900)
    assert latest["properties"]["runningStatus"]["code"] == "Completed", latest
    assert worst <= 1, f"{worst} instances out of service at once"
    hist = lab.call("GET", "/v1/scaleSets/web/osUpgradeHistory")["value"]
    entry = hist[0]["properties"]
    assert entry["startedBy"] == "Platform"
    assert entry["progress"]["successfulInstanceCount"] == 6
    assert entry["progress"]["failedInstanceCount"] == 0
    assert entry["targetImageReference"]["version"] == "2"
    assert all(v["imageVersion"] == "2" and v["health"] == "Healthy" for v in lab.vms("web"))

    # version 3 never turns healthy: the first instance is rolled back, Faulted
    lab.publish(IMAGES / "tiny-3", "tiny", "3")
    wait_until(
        lambda: len(lab.call("GET", "/v1/scaleSets/web/osUpgradeHistory")["value"]) == 2,
        30,
        "the second upgrade",
    )
    latest, worst = lab.watch_upgrade("web", 900)
    props = latest["properties"]
    assert props["runningStatus"]["code"] == "Faulted", latest
    assert props["error"]["code"] == "MaxUnhealthyUpgradedInstancePercentExceeded"
    assert worst <= 1
    entry = lab.call("GET", "/v1/scaleSets/web/osUpgradeHistory")["value"][0]["properties"]
    assert entry["rollbackInfo"]["successfullyRolledbackInstanceCount"] == 1
    assert entry["progress"]["failedInstanceCount"] == 1
    decisions = latest["kvmss"]["decisions"]
    assert any("not healthy within 60s" in d["message"] for d in decisions)
    wait_until(
        lambda: all(v["imageVersion"] == "2" and v["health"] == "Healthy" for v in lab.vms("web")),
        180,
        "every instance back on version 2 and healthy",
    )
