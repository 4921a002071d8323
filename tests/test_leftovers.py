"""A killed run's leftovers (a defined domain, an agent process, its bridge)
are removed by the next run's sweep; a live run's directory is left alone.
Real libvirt (qemu:///system, the domain defined, never started), real
bridges, real processes."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
import yaml

from hostagent.network.bridge import bridge_exists, delete_bridge, ensure_bridge
from tests import leftovers
from tests.fixtures import storage_root

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="bridges and qemu:///system need root")

DOMAIN = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>32</memory>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>"""


def dead_owner(d: Path) -> None:
    """Mark ``d`` as made by a process that has ended."""
    p = subprocess.Popen(["sleep", "30"])
    start = leftovers.start_time(p.pid)
    p.kill()
    p.wait()
    (d / leftovers.OWNER).write_text(json.dumps({"pid": p.pid, "start": start}))


def leave_run(root: Path, tag: str) -> tuple[str, str, subprocess.Popen[bytes]]:
    """What a run leaves in ``root``: a defined domain on a disk in it, an
    agent config naming a bridge that exists, and a process serving from it."""
    host = root / "host1"
    host.mkdir()
    name = f"kvmss-leftover-{tag}"
    bridge = f"kvt{tag}"
    ensure_bridge(bridge, f"10.201.{secrets.randbelow(250)}.1/24")
    (host / "agent.yaml").write_text(yaml.safe_dump({"bridge": {"name": bridge}}))
    conn = libvirt.open("qemu:///system")
    try:
        conn.defineXML(DOMAIN.format(name=name, disk=host / "os-1.qcow2"))
    finally:
        conn.close()
    serving = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", str(host / "agent.yaml")]
    )
    return name, bridge, serving


def domain_defined(name: str) -> bool:
    conn = libvirt.open("qemu:///system")
    try:
        return name in conn.listDefinedDomains() + [d.name() for d in conn.listAllDomains(0)]
    finally:
        conn.close()


@pytest.fixture
def run_dir() -> Iterator[tuple[Path, str]]:
    tag = secrets.token_hex(3)
    with storage_root("leftover") as root:
        yield root, tag
    conn = libvirt.open("qemu:///system")
    try:
        for dom in conn.listAllDomains(0):
            if dom.name() == f"kvmss-leftover-{tag}":
                dom.undefine()
    finally:
        conn.close()
    delete_bridge(f"kvt{tag}")


def test_a_dead_runs_domain_process_bridge_and_directory_are_removed(
    run_dir: tuple[Path, str],
) -> None:
    root, tag = run_dir
    run = root / "dead"
    run.mkdir()
    name, bridge, serving = leave_run(run, tag)
    dead_owner(run)

    removed = leftovers.sweep(root)

    assert f"domain {name}" in removed and not domain_defined(name)
    assert serving.wait(10) == -9, "the process serving from it was killed"
    assert f"bridge {bridge}" in removed and not bridge_exists(bridge)
    assert not run.exists()


def test_a_live_runs_leftovers_and_an_unmarked_directory_are_kept(
    run_dir: tuple[Path, str],
) -> None:
    root, tag = run_dir
    live, unmarked = root / "live", root / "cache"
    live.mkdir()
    unmarked.mkdir()
    leftovers.mark_owner(live)
    name, bridge, serving = leave_run(live, tag)
    try:
        assert leftovers.sweep(root) == []
        assert domain_defined(name) and bridge_exists(bridge) and serving.poll() is None
        assert live.exists() and unmarked.exists()
    finally:
        serving.kill()
        serving.wait()


def test_a_reused_pid_is_not_its_owner(tmp_path: Path) -> None:
    (tmp_path / leftovers.OWNER).write_text(json.dumps({"pid": os.getpid(), "start": "0"}))
    assert leftovers.stale(tmp_path)
    leftovers.mark_owner(tmp_path)
    assert not leftovers.stale(tmp_path)
