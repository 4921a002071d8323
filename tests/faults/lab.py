"""A lab for fault scenarios: the controller as its own process (so a test can
SIGKILL it and start it again on the same database), real host agents
(tests.agentproc), and a scale set of tiny TCG guests whose service can be
probed from this host whatever the controller and agents are doing.

One lab serves every fault module of a pytest run (:func:`shared_lab`):
booting the guests is the expensive part, and each scenario starts from
"every instance healthy on the newest version" and publishes the next one.
A version whose number ends in 9 never turns healthy (its service refuses to
start), so a scenario that needs a rollback publishes one of those.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from bench.scalesets import custom_script, http_probe, scale_set_body
from bench.served import free_port
from images.tiny.build import build as build_image
from kvmss.client import imagebuild
from kvmss.client.api import ApiClient
from tests.agentproc import REPO, AgentProcess
from tests.fixtures import storage_root
from tests.labstate import describe_lab, explained

TOKEN = "fault-controller-token-0123456789"
IMAGES = REPO / "build" / "images"
LOGS = REPO / "build" / "faults-logs"
SET = "faults"
CRASH_ENV = "KVMSS_CONTROLLER_CRASH_AT"

# The extension: once per data disk, a marker and 1 MiB of random bytes on
# lun1 (never mounted; the image mounts lun0 at /data), so a disk replaced or
# rewritten by kvmss would show; fsync'd, so QEMU writes its qcow2 metadata
# (else the bytes sit in QEMU's cache and a reader of the file sees none
# until the guest stops: a false "changed" later); then the service, from a per-boot script so
# it also comes back after a rollback (same instance-id, no extension run),
# except on versions ending in 9.
SERVICE = (
    "for b in /sys/block/vd*; do"
    ' [ "$(cat $b/serial 2>/dev/null)" = lun1 ] && d=/dev/${b##*/}; done; '
    'if [ -n "$d" ] && ! head -c 10 "$d" | grep -q KVMSS-LUN1; then '
    "{ echo KVMSS-LUN1 $(cat /proc/sys/kernel/random/uuid); head -c 1048576 /dev/urandom; }"
    ' | dd of="$d" bs=65536 conv=fsync 2>/dev/null && echo "lun1 marked"; fi; '
    'case "$(cat /etc/os-version)" in *9) echo "no service on this version"; exit 0;; esac; '
    "mkdir -p /var/lib/cloud/scripts/per-boot /www && echo ok > /www/health && "
    "printf '#!/bin/sh\\nbusybox httpd -p 8080 -h /www\\n' "
    "> /var/lib/cloud/scripts/per-boot/httpd.sh && "
    "chmod +x /var/lib/cloud/scripts/per-boot/httpd.sh && "
    "/var/lib/cloud/scripts/per-boot/httpd.sh"
)


# Seconds an upgraded instance has to turn healthy: a tiny guest needs 12 to
# 45 s under TCG on two cores shared with other builds (the happy path never
# waits it out). Scenarios where no new version has to turn healthy in time
# (it never does, or its host is lost) use SHORT_TIMEOUT.
HEALTH_TIMEOUT = 90
SHORT_TIMEOUT = 30


def model(capacity: int = 3, health_timeout: str = f"PT{HEALTH_TIMEOUT}S") -> dict[str, Any]:
    """Rolling upgrades one instance at a time (N <= 5), automatic on publish,
    rolled back when not healthy within ``health_timeout``; two data disks."""
    return scale_set_body(
        capacity,
        ("kvmss", "tiny", "1"),
        prefix="flt",
        data_disks=2,
        health_timeout=health_timeout,
        probe=http_probe(interval=1, probes=2),
        extensions=[custom_script("service", SERVICE)],
    )


class ControllerProcess:
    """``python -m controller.daemon.server --config FILE`` on a fixed port and database."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = root / "controller.yaml"
        self.log = root / "controller.log"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "listen": f"127.0.0.1:{self.port}",
                    "token": TOKEN,
                    "database": str(root / "kvmss.db"),
                    "blob_dir": str(root / "images"),
                    "poll_seconds": 1,
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, crash_at: str | None = None) -> None:
        """Start it (armed with a crash point when ``crash_at`` is given) and
        wait until it answers /healthz."""
        env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
        if crash_at:
            env[CRASH_ENV] = crash_at
        with self.log.open("ab") as logf:
            logf.write(f"--- start {self.starts} crash_at={crash_at}\n".encode())
            logf.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "controller.daemon.server", "--config", str(self.config)],
                cwd=REPO,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.starts += 1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"controller exited: {self.tail()}")
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"controller did not answer within 60s: {self.tail()}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the controller did not exit within {timeout:g}s: {self.tail()}"
            ) from None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass
class FaultLab:
    root: Path
    ctl: ControllerProcess
    agents: list[AgentProcess]
    published: list[str] = field(default_factory=list)
    version: str = "1"  # what every instance runs between scenarios

    def restore(self) -> None:
        """Before each scenario (after a failed one too): the controller and
        every agent running, no upgrade running, every instance healthy;
        :attr:`version` what they all run."""
        if not self.ctl.running():
            self.ctl.start()
        for a in self.agents:
            if a.proc is not None and a.proc.poll() is None:
                a.proc.send_signal(signal.SIGCONT)
            else:
                a.start()
        if self.history() and self.running():
            self.call("POST", f"/v1/scaleSets/{SET}/rollingUpgrades/cancel")
            wait_until(lambda: not self.running(), 300, "the cancelled upgrade to end")
        self.wait_all_healthy()
        versions = {v.current.image.version for a in self.agents for v in a.client.instances()}
        if len(versions) == 1:
            self.version = versions.pop()

    def running(self) -> bool:
        return bool(self.latest()["properties"]["runningStatus"]["code"] == "RollingForward")

    @property
    def url(self) -> str:
        return self.ctl.url

    def call(self, method: str, path: str, **kw: Any) -> Any:
        r = requests.request(
            method, self.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60, **kw
        )
        assert r.status_code < 400, (method, path, r.status_code, r.text)
        return r.json() if r.content else None

    def agent(self, host: str) -> AgentProcess:
        return next(a for a in self.agents if a.name == host)

    # -- images --------------------------------------------------------------------

    def next_version(self, *, healthy: bool = True) -> str:
        """The smallest version above every published one that is (not) healthy."""
        v = max((int(p) for p in self.published), default=0) + 1
        while (str(v).endswith("9")) == healthy:
            v += 1
        return str(v)

    def publish(self, version: str) -> None:
        """Build tiny-<version> if needed and publish it (what ``kvmss image
        publish`` does); an automatic upgrade follows."""
        out = IMAGES / f"tiny-{version}"
        build_image(version, out)
        imagebuild.publish(ApiClient(self.url, TOKEN), out, "kvmss", "tiny", "1", version)
        self.published.append(version)

    # -- the scale set ---------------------------------------------------------------

    def vms(self) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/v1/scaleSets/{SET}/virtualMachines")["value"])

    def history(self) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/v1/scaleSets/{SET}/osUpgradeHistory")["value"])

    def latest(self) -> dict[str, Any]:
        return dict(self.call("GET", f"/v1/scaleSets/{SET}/rollingUpgrades/latest"))

    def upgrade_rows(self) -> dict[str, dict[str, Any]]:
        """The latest upgrade's instances, by instance id."""
        return {r["instanceId"]: r for r in self.latest()["kvmss"]["instances"]}

    def set_health_timeout(self, seconds: int) -> None:
        """The scale set's healthTimeout for the next upgrade (changes no instance)."""
        policy = {"rollingUpgradePolicy": {"healthTimeout": f"PT{seconds}S"}}
        patch = {"properties": {"upgradePolicy": policy}}
        self.call("PATCH", f"/v1/scaleSets/{SET}", json=patch)

    def wait_upgrade_started(self, count: int, timeout: float = 60) -> None:
        wait_until(lambda: len(self.history()) >= count, timeout, f"upgrade number {count}")

    def wait_all_healthy(self, version: str | None = None, timeout: float = 240) -> None:
        """Every instance healthy (on ``version``) as its agent says (not the
        controller's cached views)."""

        def done() -> bool:
            views = [v for a in self.agents for v in a.client.instances()]
            return len(views) == len(self.vms()) and all(
                v.health.state == "Healthy" and version in (None, v.current.image.version)
                for v in views
            )

        what = f"every instance healthy on version {version or 'any'}"
        wait_until(done, timeout, what, explain=self.describe)

    def describe(self) -> str:
        """What the agents and the controller say of each instance, and the
        ends of their logs: the message of a lab that got stuck."""
        return describe_lab(self.agents, self.vms, [self.ctl.log])


def keep_logs(root: Path, dest: Path) -> None:
    """The controller's, agents' and guests' logs of a lab, kept after it is
    torn down (build/faults-logs/<tag>/, replaced by the next run)."""
    shutil.rmtree(dest, ignore_errors=True)
    for p in root.rglob("*.log"):
        target = dest / p.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)


def wait_until(
    pred: Callable[[], Any],
    timeout: float,
    what: str,
    every: float = 1.0,
    explain: Callable[[], str] | None = None,
) -> None:
    """Poll ``pred`` until it holds; on timeout, fail with ``what`` and what
    ``explain`` tells of the state it was stuck in."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except (requests.RequestException, AssertionError):
            pass  # a controller or agent that is down answers nothing yet
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}" + explained(explain))


@contextmanager
def fault_lab(tag: str = "faults", hosts: int = 2, capacity: int = 3) -> Iterator[FaultLab]:
    """A controller process, ``hosts`` agents and the scale set ``faults`` of
    ``capacity`` healthy instances on version 1; all torn down on exit."""
    with storage_root(tag) as root:
        (root / "ctl").mkdir()
        agents = []
        for i in range(1, hosts + 1):
            (root / f"host{i}").mkdir()
            agents.append(AgentProcess(root / f"host{i}", name=f"host{i}"))
        lab = FaultLab(root, ControllerProcess(root / "ctl"), agents)
        try:
            lab.ctl.start()
            for a in agents:
                a.start()
                host = {"name": a.name, "url": a.client.base_url, "token": a.token}
                lab.call("POST", "/v1/hosts", json=host)
            lab.publish("1")
            lab.call("PUT", f"/v1/scaleSets/{SET}", json=model(capacity))
            created = f"{capacity} instances"
            wait_until(lambda: len(lab.vms()) == capacity, 60, created, explain=lab.describe)
            lab.wait_all_healthy(lab.version, timeout=300)
            yield lab
        finally:
            lab.ctl.stop()
            for a in agents:
                a.cleanup()
            keep_logs(root, LOGS / tag)


_shared: list[FaultLab] = []
_shared_failed: list[str] = []


def shared_lab(request: pytest.FixtureRequest) -> FaultLab:
    """The one lab of this pytest run, made on first use and torn down when
    the run ends (fault modules share it: guests boot once). A lab that
    failed to come up is not tried again: every later scenario fails at once
    with the first failure's message."""
    if _shared_failed:
        pytest.fail(f"the shared fault lab did not come up: {_shared_failed[0]}")
    if not _shared:
        cm = fault_lab()
        try:
            _shared.append(cm.__enter__())
        except Exception as e:
            _shared_failed.append(str(e))
            raise

        def close() -> None:
            cm.__exit__(None, None, None)

        request.config.add_cleanup(close)
    lab = _shared[0]
    lab.restore()
    return lab
