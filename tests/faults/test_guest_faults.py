"""Guest and image faults during automatic OS upgrades, on real TCG guests.

One lab for every scenario: a controller and two agents; host1 keeps its
storage on a 256 MiB tmpfs (so its disk can be filled). Three scale sets of 3
tiny instances, each with two data disks (lun 0 is /data, lun 1 is never
mounted: its file is compared byte for byte before and after), each on its own
offer so a version published for one scenario upgrades only its set:

1. ``flap``: version 2's service answers, closes for 8 s, answers again while
   the instance waits for health (Succeeded: numberOfProbes successes in a
   row before the deadline is all that counts), then serves 404 for 7 s after
   the instance was committed (nothing is rolled back).
2. ``hang``: version 2's second extension never ends: not healthy within
   PT30S, rolled back, the upgrade stops (Faulted), the instance Healthy on 1.
3. ``frail``: host1's disk is full when version 2 (a 48 MiB image) arrives:
   the agent refuses the reimage with ImageNoSpace (HTTP 503: it may pass),
   nothing is left in its cache, the instance keeps running on its old disk;
   the controller asks again until the health timeout, then marks it Failed
   (no rollback) and stops. Then (4a) a truncated qcow2 is refused at
   publish, and (4b) version 4's blob is corrupted on the controller after
   publishing: the agent's sha256 check refuses it and nothing changes.

Each scenario records its figures with tests.faults.record.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.scalesets import custom_script
from hostagent.contract.client import AgentError
from hostagent.contract.views import InstanceView
from images.tiny.build import build as build_image
from kvmss.client import imagebuild
from kvmss.client.api import ApiClient, ApiError
from tests.agentproc import REPO
from tests.faults.guestfaults import (
    DataDiskSnapshot,
    FaultLab,
    MiB,
    Sample,
    Sampler,
    console,
    fault_lab,
    filled,
    final_states,
    flip_bytes,
    free_bytes,
    hang_command,
    instances,
    model,
    padded_disk,
    service_command,
    truncated_disk,
    variant,
    views,
    wait_ended,
    wait_new_upgrade,
)
from tests.faults.record import record
from tests.guestlab import TOKEN, wait_until

pytestmark = pytest.mark.guest

IMAGES = REPO / "build" / "images"
TMPFS_BYTES = 256 * MiB
SLACK = 16 * MiB  # what the filler leaves free on host1: room for the guests' writes
PAD = 48 * MiB  # version 2 of "frail" is this much bigger than the tiny image
FLAP, HANG, FRAIL = "flap", "hang", "frail"
BATCH = 1  # 3 instances: b = 1 (rule 1)


@dataclass
class Env:
    fl: FaultLab
    lun1: dict[str, DataDiskSnapshot]


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    for v in ("1", "2"):
        build_image(v, IMAGES / f"tiny-{v}")
    with fault_lab("gfaults", TMPFS_BYTES) as fl:
        lab = fl.lab
        for offer in (FLAP, HANG, FRAIL):
            lab.publish(IMAGES / "tiny-1", offer, "1")
        service = custom_script("service", service_command())
        models = {
            FLAP: model(
                FLAP,
                [custom_script("service", service_command(flap_version="2"))],
                health_timeout="PT60S",
                # the committed instance flaps while the next batch waits: tolerate one of 3
                max_unhealthy_percent=40,
            ),
            HANG: model(
                HANG,
                [service, custom_script("setup", hang_command("2"), after=["service"])],
                health_timeout="PT30S",
            ),
            FRAIL: model(FRAIL, [service], health_timeout="PT30S"),
        }
        for name, body in models.items():
            lab.call("PUT", f"/v1/scaleSets/{name}", json=body)
        wait_until(
            lambda: all(
                len(vms := lab.vms(n)) == 3 and all(v["health"] == "Healthy" for v in vms)
                for n in models
            ),
            480,
            "9 healthy instances",
            explain=lambda: lab.describe(*models),
        )
        yield Env(fl, {n: DataDiskSnapshot(fl, n) for n in models})


def rows(latest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["instanceId"]: r for r in latest["kvmss"]["instances"]}


def messages(latest: dict[str, Any]) -> str:
    return "\n".join(d["message"] for d in latest["kvmss"]["decisions"])


def when(samples: list[Sample], iid: str, state: str) -> list[Sample]:
    return [s for s in samples if s.states.get(iid) == state]


def in_health_wait(samples: list[Sample], iid: str, version: str) -> list[InstanceView]:
    """What the agent said of ``iid`` from its reimage to ``version`` until its
    commit: on the new disk with the old one kept. The upgrade's own record
    turns WaitingHealth only when the controller next looks at the reimage
    (up to 5 s later, while the guest already boots), so its states alone
    would miss the start of the wait."""
    return [
        v
        for s in samples
        if s.states.get(iid) in ("Reimaging", "WaitingHealth")
        and (v := s.views[iid]) is not None
        and v.current.image.version == version
        and v.previous is not None
    ]


# -- 1. health flaps -----------------------------------------------------------------


def test_flap_during_the_health_wait_succeeds_and_a_flap_after_it_rolls_nothing_back(
    env: Env,
) -> None:
    fl, lab = env.fl, env.fl.lab
    insts = instances(lab, FLAP)
    n = len(lab.history(FLAP))
    t0 = time.monotonic()
    with Sampler(fl, FLAP) as sampler:
        lab.publish(IMAGES / "tiny-2", FLAP, "2")
        wait_new_upgrade(lab, FLAP, n)
        latest = wait_ended(lab, FLAP, 600)
        upgrade_s = time.monotonic() - t0
        # every instance also flaps after its commit (the last one after the
        # upgrade ended): wait until each console shows that flap over
        wait_until(
            lambda: (
                all("kvmss-flap: 200" in console(fl, i.host, i.name) for i in insts)
                and all(v.health.state == "Healthy" for v in views(fl, FLAP).values())
            ),
            120,
            "every instance through its post-commit flap and healthy",
        )
    samples = sampler.samples
    props = latest["properties"]
    assert props["runningStatus"]["code"] == "Completed", messages(latest)
    entry = lab.history(FLAP)[0]["properties"]
    assert entry["progress"]["successfulInstanceCount"] == 3
    assert entry["progress"]["failedInstanceCount"] == 0
    assert entry["rollbackInfo"]["successfullyRolledbackInstanceCount"] == 0
    assert {r["state"] for r in rows(latest).values()} == {"Succeeded"}

    committed_flaps_during_upgrade = 0
    for i in insts:
        text = console(fl, i.host, i.name)
        for line in ("closed", "open", "404", "200"):
            assert f"kvmss-flap: {line}" in text, (i.name, line)
        # inside the wait: a probe answered, then numberOfProbes failed in a
        # row (the verdict turned Unhealthy), and still the instance Succeeded
        views_waiting = in_health_wait(samples, i.instance_id, "2")
        oks = [
            k
            for k, v in enumerate(views_waiting)
            if v.probe is not None and v.probe.consecutiveSuccesses >= 1
        ]
        assert oks, f"{i.name}: no probe answered while it waited"
        first_ok = oks[0]
        assert any(
            v.probe is not None
            and v.probe.consecutiveFailures >= 3
            and v.health.state == "Unhealthy"
            for v in views_waiting[first_ok:]
        ), f"{i.name}: no flap seen inside the health wait"
        # 1 or 2 successes never made it healthy: it was committed only later
        assert all(v.health.state != "Healthy" for v in views_waiting[: first_ok + 1])
        # after the commit: unhealthy again (404), still Succeeded, same disk
        done = when(samples, i.instance_id, "Succeeded")
        assert done, f"{i.name} never Succeeded"
        v0 = done[0].views[i.instance_id]
        assert v0 is not None
        committed_id = v0.current.instanceId
        flapped = [
            s
            for s in done
            if (v := s.views[i.instance_id]) is not None
            and v.health.state == "Unhealthy"
            and v.previous is None
            and v.current.image.version == "2"
        ]
        assert flapped, f"{i.name}: no unhealthy sample after its commit"
        committed_flaps_during_upgrade += sum(1 for s in flapped if s.code == "RollingForward")
        for s in done:
            v = s.views[i.instance_id]
            assert v is None or v.current.instanceId == committed_id, f"{i.name} changed disk"
    assert committed_flaps_during_upgrade > 0, "no committed instance flapped mid-upgrade"

    worst = sampler.worst("2")
    assert worst <= BATCH, f"{worst} instances out of service because of the upgrade"
    changed = env.lun1[FLAP].bytes_changed()
    assert changed == 0
    final = final_states(fl, FLAP)
    assert all(s.startswith("Healthy v2 running") for s in final.values()), final
    record(
        "guest-health-flap",
        instances=3,
        fault="v2 service closes 8 s during the health wait, serves 404 7 s after the commit",
        outcome=f"{props['runningStatus']['code']}: 3 Succeeded, 0 rolled back",
        out_of_service_max=worst,
        out_of_service_max_any_reason=sampler.worst_raw(),
        batch_size=BATCH,
        data_disk_bytes_changed=changed,
        duration_s=round(upgrade_s, 1),
        final_states=final,
    )


# -- 2. an extension that never reports --------------------------------------------


def test_hung_extension_is_rolled_back_and_stops_the_upgrade(env: Env) -> None:
    fl, lab = env.fl, env.fl.lab
    before = views(fl, HANG)
    n = len(lab.history(HANG))
    t0 = time.monotonic()
    with Sampler(fl, HANG) as sampler:
        lab.publish(IMAGES / "tiny-2", HANG, "2")
        wait_new_upgrade(lab, HANG, n)
        latest = wait_ended(lab, HANG, 600)
        wait_until(
            lambda: all(v.health.state == "Healthy" for v in views(fl, HANG).values()),
            180,
            "the rolled-back instance healthy",
        )
    duration = time.monotonic() - t0
    props = latest["properties"]
    assert props["runningStatus"]["code"] == "Faulted"
    assert props["error"]["code"] == "MaxUnhealthyUpgradedInstancePercentExceeded"
    r = rows(latest)
    assert r["0"]["state"] == "RolledBack", r
    assert {r["1"]["state"], r["2"]["state"]} == {"Pending"}, "the stop rule did not stop it"
    why = next(m for m in messages(latest).splitlines() if "not healthy within 30s" in m)
    assert "extension setup is Transitioning" in why, why
    entry = lab.history(HANG)[0]["properties"]
    assert entry["progress"]["failedInstanceCount"] == 1
    assert entry["progress"]["pendingInstanceCount"] == 2
    assert entry["rollbackInfo"]["successfullyRolledbackInstanceCount"] == 1
    assert entry["rollbackInfo"]["failedRolledbackInstanceCount"] == 0

    # while it waited, version 2 ran and its "setup" extension hung
    on_v2 = [
        v
        for s in when(sampler.samples, "0", "WaitingHealth")
        if (v := s.views["0"]) is not None and v.current.image.version == "2"
    ]
    assert on_v2, "instance 0 was never seen on version 2"
    assert any(
        {e.name: e.status for e in v.extensions}
        == {"service": "Succeeded", "setup": "Transitioning"}
        for v in on_v2
    )
    failed_gen = on_v2[-1].current.generation

    after = views(fl, HANG)
    for iid, v in after.items():
        assert v.current.instanceId == before[iid].current.instanceId, iid
        assert v.current.generation == before[iid].current.generation
        assert v.current.image.version == "1" and v.previous is None
        assert v.health.state == "Healthy" and v.powerState == "running"
    assert {e.status for e in after["0"].extensions} == {"Succeeded"}
    inst0 = instances(lab, HANG)[0]
    os_disks = Path(after["0"].current.osDisk).parent.glob("os-*.qcow2")
    assert sorted(p.name for p in os_disks) == [Path(after["0"].current.osDisk).name]
    assert failed_gen != after["0"].current.generation

    worst = sampler.worst("2")
    assert worst <= BATCH, f"{worst} instances out of service because of the upgrade"
    changed = env.lun1[HANG].bytes_changed()
    assert changed == 0
    final = final_states(fl, HANG)
    record(
        "guest-extension-hang",
        instances=3,
        fault="v2 extension 'setup' never ends (never reports); healthTimeout PT30S",
        outcome=f"Faulted {props['error']['code']}: instance 0 rolled back, 2 left pending",
        out_of_service_max=worst,
        batch_size=BATCH,
        data_disk_bytes_changed=changed,
        duration_s=round(duration, 1),
        final_states=final,
        rolled_back_host=inst0.host,
    )


# -- 3. the host's disk is full ------------------------------------------------------


def test_full_host_disk_fails_the_reimage_clearly_and_keeps_the_old_disk(env: Env) -> None:
    fl, lab = env.fl, env.fl.lab
    big = padded_disk(IMAGES / "tiny-2" / "disk.qcow2", fl.work / "frail-2.qcow2", PAD)
    image = variant(IMAGES / "tiny-2", fl.work / "frail-2", big)
    size = (image / "disk.qcow2").stat().st_size
    insts = instances(lab, FRAIL)
    assert insts[0].host == "host1", "instance 0 (the first batch) must be on the small disk"
    before = views(fl, FRAIL)
    cache = fl.small_storage / "cache"
    cached_before = sorted(os.listdir(cache))
    n = len(lab.history(FRAIL))
    t0 = time.monotonic()
    with filled(fl.small_storage, SLACK), Sampler(fl, FRAIL) as sampler:
        free = free_bytes(fl.small_storage)
        assert free < size, (free, size)
        lab.publish(image, FRAIL, "2")
        wait_new_upgrade(lab, FRAIL, n)
        latest = wait_ended(lab, FRAIL, 300)
        duration = time.monotonic() - t0
        # the agent's own answer to that reimage: a clear error, not a 500
        rec = lab.ctl.catalog.resolve("kvmss", FRAIL, "1", "2")
        with pytest.raises(AgentError) as refused:
            fl.client("host1").reimage(insts[0].name, lab.ctl.image_spec(rec))
        cached_after = sorted(os.listdir(cache))
        time.sleep(3)  # a few more samples: the instance stays up
    assert refused.value.status == 503, refused.value
    assert refused.value.code == "ImageNoSpace"
    assert "no space left" in refused.value.message
    assert cached_after == cached_before, "the failed download left something in the cache"

    props = latest["properties"]
    assert props["runningStatus"]["code"] == "Faulted"
    assert props["error"]["code"] == "MaxUnhealthyUpgradedInstancePercentExceeded"
    r = rows(latest)
    assert r["0"]["state"] == "Failed", r
    assert "ImageNoSpace" in r["0"]["reason"] and "no space left" in r["0"]["reason"]
    assert {r["1"]["state"], r["2"]["state"]} == {"Pending"}
    events = {d["event"] for d in latest["kvmss"]["decisions"]}
    assert not events & {"RollingBack", "RolledBack", "RollbackFailed"}, events
    assert all("RollingBack" not in s.states.values() for s in sampler.samples)
    entry = lab.history(FRAIL)[0]["properties"]
    assert entry["progress"]["failedInstanceCount"] == 1
    assert entry["rollbackInfo"]["successfullyRolledbackInstanceCount"] == 0
    assert entry["rollbackInfo"]["failedRolledbackInstanceCount"] == 0

    after = views(fl, FRAIL)
    for iid, v in after.items():
        assert v.current.instanceId == before[iid].current.instanceId, iid
        assert v.current.image.version == "1" and v.previous is None
        assert v.health.state == "Healthy" and v.powerState == "running"
    os_disk = Path(after["0"].current.osDisk)
    assert sorted(p.name for p in os_disk.parent.glob("os-*.qcow2")) == [os_disk.name]
    worst = sampler.worst("2")
    assert worst == 0, "an instance went out of service although none was touched"
    changed = env.lun1[FRAIL].bytes_changed()
    assert changed == 0
    record(
        "host-disk-full-during-reimage",
        instances=3,
        fault=f"host1's storage (tmpfs) filled to {free} bytes free; v2 is {size} bytes",
        outcome="Faulted: instance 0 Failed (ImageNoSpace, HTTP 503), not rolled back, untouched",
        out_of_service_max=worst,
        batch_size=BATCH,
        data_disk_bytes_changed=changed,
        duration_s=round(duration, 1),
        final_states=final_states(fl, FRAIL),
    )


# -- 4. corrupt image versions -------------------------------------------------------


def test_truncated_image_is_refused_at_publish_and_starts_nothing(env: Env) -> None:
    fl, lab = env.fl, env.fl.lab
    src = IMAGES / "tiny-1" / "disk.qcow2"
    half = truncated_disk(src, fl.work / "frail-3.qcow2", src.stat().st_size // 2)
    image = variant(IMAGES / "tiny-1", fl.work / "frail-3", half)
    before = views(fl, FRAIL)
    n = len(lab.history(FRAIL))
    t0 = time.monotonic()
    with Sampler(fl, FRAIL) as sampler:
        with pytest.raises(ApiError) as refused:
            imagebuild.publish(ApiClient(lab.url, TOKEN), image, "kvmss", FRAIL, "1", "3")
        duration = time.monotonic() - t0
        time.sleep(3)  # time for an upgrade to start, were one to
    assert refused.value.status == 400
    assert refused.value.code == "CheckFailed", refused.value
    versions = lab.call("GET", f"/v1/images/kvmss/{FRAIL}/1/versions")["value"]
    assert "3" not in {v["version"] for v in versions}
    assert len(lab.history(FRAIL)) == n, "an upgrade started"
    after = views(fl, FRAIL)
    assert {i: v.current.instanceId for i, v in after.items()} == {
        i: v.current.instanceId for i, v in before.items()
    }
    worst = sampler.worst("3")
    assert worst == 0
    changed = env.lun1[FRAIL].bytes_changed()
    assert changed == 0
    record(
        "image-truncated-publish",
        instances=3,
        fault="a qcow2 cut to half its size published as version 3",
        outcome=f"publish refused: HTTP 400 {refused.value.code}; no upgrade started",
        out_of_service_max=worst,
        batch_size=BATCH,
        data_disk_bytes_changed=changed,
        duration_s=round(duration, 1),
        final_states=final_states(fl, FRAIL),
    )


def test_blob_corrupted_after_publish_is_refused_by_the_agent_and_changes_nothing(
    env: Env,
) -> None:
    fl, lab = env.fl, env.fl.lab
    # started by hand: published with automatic upgrades on, the agents would
    # fetch the blob before it could be corrupted
    lab.call(
        "PATCH",
        f"/v1/scaleSets/{FRAIL}",
        json={
            "properties": {
                "upgradePolicy": {"automaticOSUpgradePolicy": {"enableAutomaticOSUpgrade": False}}
            }
        },
    )
    unique = padded_disk(IMAGES / "tiny-1" / "disk.qcow2", fl.work / "frail-4.qcow2", MiB)
    lab.publish(variant(IMAGES / "tiny-1", fl.work / "frail-4", unique), FRAIL, "4")
    rec = lab.ctl.catalog.resolve("kvmss", FRAIL, "1", "4")
    flip_bytes(Path(rec.path), rec.size_bytes // 2)
    before = views(fl, FRAIL)
    n = len(lab.history(FRAIL))
    t0 = time.monotonic()
    with Sampler(fl, FRAIL) as sampler:
        lab.call("POST", f"/v1/scaleSets/{FRAIL}/osRollingUpgrade")
        wait_new_upgrade(lab, FRAIL, n)
        latest = wait_ended(lab, FRAIL, 300)
        duration = time.monotonic() - t0
        inst0 = instances(lab, FRAIL)[0]
        with pytest.raises(AgentError) as refused:  # the agent's own answer
            fl.client(inst0.host).reimage(inst0.name, lab.ctl.image_spec(rec))
        time.sleep(3)
    assert refused.value.status == 422, refused.value
    assert refused.value.code == "ImageSha256Mismatch"
    props = latest["properties"]
    assert props["runningStatus"]["code"] == "Faulted"
    assert latest["kvmss"]["targetImageReference"]["version"] == "4"
    r = rows(latest)
    assert r["0"]["state"] == "Failed", r
    reason = r["0"]["reason"]
    assert "ImageSha256Mismatch" in reason and f"expected {rec.sha256}" in reason, reason
    assert "sig=" not in messages(latest), "a signed URL leaked into the decisions"
    entry = lab.history(FRAIL)[0]["properties"]
    assert entry["startedBy"] == "User"
    assert entry["progress"]["failedInstanceCount"] == 1
    assert entry["rollbackInfo"]["successfullyRolledbackInstanceCount"] == 0
    events = {d["event"] for d in latest["kvmss"]["decisions"]}
    assert not events & {"RollingBack", "RolledBack", "RollbackFailed"}, events

    cache = Path(fl.small_storage) / "cache"
    assert not (cache / rec.sha256).exists() and not (cache / f"{rec.sha256}.part").exists()
    after = views(fl, FRAIL)
    for iid, v in after.items():
        assert v.current.instanceId == before[iid].current.instanceId, iid
        assert v.current.generation == before[iid].current.generation
        assert v.current.image.version == "1" and v.previous is None
        assert v.health.state == "Healthy" and v.powerState == "running"
    worst = sampler.worst("4")
    assert worst == 0
    changed = env.lun1[FRAIL].bytes_changed()
    assert changed == 0
    record(
        "image-corrupt-in-transit",
        instances=3,
        fault="16 bytes of version 4's stored blob inverted on the controller after publish",
        outcome="Faulted: instance 0 Failed (ImageSha256Mismatch, HTTP 422), nothing changed",
        out_of_service_max=worst,
        batch_size=BATCH,
        data_disk_bytes_changed=changed,
        duration_s=round(duration, 1),
        final_states=final_states(fl, FRAIL),
    )
