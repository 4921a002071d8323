"""A real TCG guest boots from a 0600 seed in a 0711 instance directory.

libvirt's dynamic_ownership hands the seed to its QEMU user while the guest
runs; the guest reaching Healthy shows its init read the seed (the
extensions come from its user-data). Other local users neither read the seed
nor list the directory, while the guest runs, after it stops, and after it
starts again.
"""

from __future__ import annotations

import pwd
import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from tests.hostagent.lifecycle.test_guests import Lab, healthy, lab, run, spec, wait_view

pytestmark = pytest.mark.guest

__all__ = ["lab"]  # the module-scoped agent and images of test_guests

NAME = "seedpriv-0"
NOBODY = "nobody"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _as_nobody(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", NOBODY, "--", *cmd], capture_output=True, text=True, timeout=30
    )


def _attached_seed(name: str) -> Path:
    """The seed file the domain's cdrom really uses."""
    conn = libvirt.openReadOnly("qemu:///system")
    try:
        xml = conn.lookupByName(name).XMLDesc(0)
    finally:
        conn.close()
    cdroms = [d for d in ET.fromstring(xml).iter("disk") if d.get("device") == "cdrom"]
    assert len(cdroms) == 1, xml
    source = cdroms[0].find("source")
    assert source is not None and source.get("file"), xml
    return Path(str(source.get("file")))


def _owner(p: Path) -> str:
    return pwd.getpwuid(p.stat().st_uid).pw_name


def _assert_private(instance_dir: Path, seed_iso: Path, when: str) -> None:
    assert _mode(seed_iso) == 0o600, f"{when}: seed mode {_mode(seed_iso):o}"
    assert _mode(instance_dir) == 0o711, f"{when}: directory mode {_mode(instance_dir):o}"
    disks = sorted(instance_dir.glob("*.qcow2"))
    assert disks, when
    for disk in disks:  # the OS disk (cloud-init copies the user-data there) and data disks
        assert _mode(disk) == 0o600, f"{when}: {disk.name} mode {_mode(disk):o}"
        read = _as_nobody("head", "-c", "1", str(disk))
        assert read.returncode != 0 and "Permission denied" in read.stderr, (when, disk, read)
    read = _as_nobody("cat", str(seed_iso))
    assert read.returncode != 0 and "Permission denied" in read.stderr, (when, read)
    listing = _as_nobody("ls", str(instance_dir))
    assert listing.returncode != 0 and "Permission denied" in listing.stderr, (when, listing)
    # the control: the same user gets through where the mode lets it
    assert _as_nobody("ls", str(instance_dir.parent.parent)).returncode == 0, when


def test_a_guest_boots_healthy_from_a_private_seed_and_disks(lab: Lab) -> None:
    c = lab.client
    run(c, c.put_instance(NAME, spec(lab, "1")))
    view = wait_view(c, NAME, healthy)
    assert {e.name: e.status for e in view.extensions} == {
        "httpd": "Succeeded",
        "marker": "Succeeded",
    }
    seed_iso = _attached_seed(NAME)
    instance_dir = seed_iso.parent
    assert seed_iso.name == f"seed-{view.current.generation}.iso"
    assert instance_dir == Path(view.current.osDisk).parent
    assert c.instance(NAME).powerState == "running"  # type: ignore[union-attr]
    _assert_private(instance_dir, seed_iso, "running")
    owners = {"running": _owner(seed_iso)}

    run(c, c.stop(NAME))
    assert c.instance(NAME).powerState != "running"  # type: ignore[union-attr]
    _assert_private(instance_dir, seed_iso, "stopped")
    owners["stopped"] = _owner(seed_iso)
    print(f"seed owner: {owners}")

    # the seed as libvirt left it after the stop serves the next boot too
    run(c, c.start(NAME))
    wait_view(c, NAME, lambda v: healthy(v) and v.powerState == "running")
    _assert_private(instance_dir, seed_iso, "restarted")

    run(c, c.delete(NAME, delete_data_disks=True))
