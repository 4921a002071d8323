"""The Debian base image built for real and booted under a real agent.

Versions 1 and 2 are built (or reused) in build/images (the first build of
a checkout makes the cached tree; each version after it takes seconds),
checked inside their disks, and an instance of version 1 (direct kernel
boot) and of a firmware-boot build (SeaBIOS, extlinux) each run cloud-init
to Healthy and take an ssh login as the admin user, with the host key read
from the guest's console.
All ``guest`` tests: they run in ``make test``, not ``make test-fast``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.served import FileServer
from hostagent.contract import instancespec, views
from hostagent.contract.client import AgentClient
from images.debian import build as debian_build
from images.debian import recipe, rootfs
from images.tiny.manifest import Manifest, sha256_file
from kvmss.base import qemuimg
from kvmss.base.clock import SystemClock
from kvmss.base.waiting import wait_for
from tests import debianimage
from tests.agentproc import AgentProcess
from tests.fixtures import storage_root

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def built() -> list[debianimage.BuiltImage]:
    images = debianimage.debian_images()
    print(f"\ndebian image build times: {[(b.version, round(b.seconds, 1)) for b in images]} s")
    return images


def _disk_file(raw: Path, path: str) -> str:
    proc = subprocess.run(
        ["debugfs", "-R", f"cat {path}", str(raw)], capture_output=True, text=True, check=True
    )
    return proc.stdout


def _disk_stat(raw: Path, path: str) -> str:
    proc = subprocess.run(
        ["debugfs", "-R", f"stat {path}", str(raw)], capture_output=True, text=True, check=True
    )
    return proc.stdout + proc.stderr


def test_versions_share_one_cached_tree_and_differ_in_their_stamp(
    built: list[debianimage.BuiltImage], tmp_path: Path
) -> None:
    manifests = [Manifest.load(b.directory / "manifest.json") for b in built]
    one, two = manifests
    for b, m in zip(built, manifests, strict=True):
        assert (m.name, m.version, m.boot, m.cmdline) == (
            "debian",
            b.version,
            "kernel",
            recipe.CMDLINE,
        )
        for f in m.files():
            assert sha256_file(b.directory / f.file) == f.sha256
        assert (
            qemuimg.info(b.directory / m.disk.file).virtual_size
            == debian_build.DEFAULT_DISK_GB << 30
        )
    assert one.inputs == two.inputs and one.kernel == two.kernel and one.initrd == two.initrd
    assert one.disk.sha256 != two.disk.sha256
    trees = [p for p in (debian_build.DEFAULT_CACHE / rootfs.CACHE_SUBDIR).iterdir() if p.is_dir()]
    assert [p.name for p in trees] == [recipe.tree_key(recipe.host_mirrors())]
    # building a version again finds it (no disk made)
    started = time.monotonic()
    again = debian_build.build("2", built[1].directory)
    assert again == two and time.monotonic() - started < 10

    raw = tmp_path / "disk.raw"
    qemuimg.convert(built[0].directory / "disk.qcow2", raw, src_format="qcow2", dst_format="raw")
    assert _disk_file(raw, "/etc/os-version") == "1\n"
    assert "IMAGE_VERSION=1\n" in _disk_file(raw, "/usr/lib/os-release")
    assert _disk_file(raw, "/etc/machine-id") == ""
    assert _disk_file(raw, "/etc/hostname") == "localhost\n"
    ls = subprocess.run(
        ["debugfs", "-R", "ls -l /etc/ssh", str(raw)], capture_output=True, text=True, check=True
    ).stdout
    assert "sshd_config" in ls and "ssh_host_" not in ls  # every instance makes its own keys
    for unit in recipe.MASKED_UNITS:
        assert 'Fast link dest: "/dev/null"' in _disk_stat(raw, f"/etc/systemd/system/{unit}")
    assert "datasource_list: [NoCloud, None]" in _disk_file(
        raw, "/etc/cloud/cloud.cfg.d/90-kvmss.cfg"
    )
    label = subprocess.run(
        ["blkid", "-o", "value", "-s", "LABEL", str(raw)], capture_output=True, text=True
    )
    assert label.stdout.strip() == recipe.ROOT_LABEL
    os.unlink(raw)


def _view(
    client: AgentClient,
    name: str,
    pred: Callable[[views.InstanceView], bool],
    timeout: float,
) -> views.InstanceView:
    last: list[views.InstanceView | None] = [None]

    def there() -> views.InstanceView | None:
        last[0] = view = client.instance(name)
        return view if view is not None and pred(view) else None

    got = wait_for(SystemClock(), there, timeout=timeout, interval=1)
    if got is None:
        raise AssertionError(f"{name} never got there; last view: {last[0]}")
    return got


# Started detached from cloud-init (systemd-run), so it outlives the script.
WEB_EXT = (
    "mkdir -p /srv/www && cp /etc/os-version /srv/www/health && "
    "systemd-run --unit=kvmss-web -p WorkingDirectory=/srv/www python3 -m http.server 8080"
)
ADMIN = "kvmssadmin"


def _boot_and_log_in(image_dir: Path, name: str, version: str) -> tuple[str, str]:
    """Create one instance from ``image_dir`` under a real agent; wait until
    Healthy; log in over ssh as the admin user. Returns a timing line and the
    guest's console log."""
    key, public = debianimage.generate_user_key()
    with storage_root("debian") as root:
        files = FileServer(image_dir.parent)
        agent = AgentProcess(root)
        try:
            agent.start()
            c = agent.client
            spec = instancespec.InstanceSpec(
                image=debianimage.image_spec(files.base_url, image_dir),
                vcpus=debianimage.VCPUS,
                memoryMB=debianimage.MEMORY_MB,
                osProfile=instancespec.OsProfile(
                    computerName=name, adminUsername=ADMIN, sshPublicKeys=[public]
                ),
                extensions=[
                    instancespec.Extension(name="web", settings={"commandToExecute": WEB_EXT}),
                    instancespec.Extension(
                        name="version",
                        settings={"commandToExecute": "cat /etc/os-version"},
                        provisionAfterExtensions=["web"],
                    ),
                ],
                healthProbe=instancespec.HealthProbe(
                    protocol="Http",
                    port=8080,
                    requestPath="/health",
                    intervalInSeconds=2,
                    numberOfProbes=2,
                ),
            )
            started = time.monotonic()
            op = c.wait(c.put_instance(name, spec), timeout=600)
            assert op.status == "Succeeded", op
            created = time.monotonic() - started
            view = _view(c, name, lambda v: v.health.state == "Healthy", 600)
            healthy = time.monotonic() - started
            exts = {e.name: e for e in view.extensions}
            assert exts["version"].status == "Succeeded"
            assert (exts["version"].message or "").strip() == version
            console = (root / f"storage/instances/{name}/console.log").read_text(errors="replace")
            host_keys = debianimage.console_host_keys(console)
            assert {k for k, _ in host_keys} >= {"ssh-ed25519"}, console[-3000:]
            with debianimage.ssh_session(view.address, ADMIN, key, host_keys) as ssh:
                assert debianimage.ssh_run(ssh, "cat /etc/os-version") == (0, f"{version}\n")
                assert debianimage.ssh_run(ssh, "hostname") == (0, f"{name}\n")
                assert debianimage.ssh_run(ssh, "sudo -n id -u") == (0, "0\n")
                status, out = debianimage.ssh_run(ssh, "cloud-init status --wait --long", 300)
                assert status == 0 and "status: done" in out, out
                status, out = debianimage.ssh_run(ssh, "sudo -n sshd -T")
                assert "passwordauthentication no" in out.splitlines(), out
                _, analyze = debianimage.ssh_run(ssh, "systemd-analyze")
            op = c.wait(c.delete(name, delete_data_disks=True), timeout=300)
            assert op.status == "Succeeded", op
            timing = (
                f"{name} ({image_dir.name}): created {created:.1f} s, healthy {healthy:.1f} s;"
                f" {analyze.strip().splitlines()[0] if analyze.strip() else ''}"
            )
            return timing, console
        finally:
            agent.cleanup()
            files.close()


def test_an_instance_runs_cloud_init_turns_healthy_and_takes_ssh_logins(
    built: list[debianimage.BuiltImage],
) -> None:
    line, console = _boot_and_log_in(built[0].directory, "deb-0", built[0].version)
    assert "SYSLINUX" not in console  # direct kernel boot
    assert f"Command line: {recipe.CMDLINE}" in console
    print("\n" + line)


def test_a_firmware_boot_disk_boots_through_seabios_and_extlinux(tmp_path: Path) -> None:
    (image,) = debianimage.debian_images(["1"], boot="firmware")
    m = Manifest.load(image.directory / "manifest.json")
    assert m.boot == "firmware"
    spec = debianimage.image_spec("http://files.invalid", image.directory)
    assert spec.kernel is None and spec.cmdline is None  # the agent boots the disk
    raw = tmp_path / "disk.raw"
    qemuimg.convert(image.directory / "disk.qcow2", raw, src_format="qcow2", dst_format="raw")
    with raw.open("rb") as f:
        sector = f.read(512)
    assert sector[510:] == b"\x55\xaa"  # a boot sector SeaBIOS will run
    assert "LINUX /boot/vmlinuz-" in _disk_file(raw, "/boot/extlinux/extlinux.conf")
    assert (
        "ldlinux.sys"
        in subprocess.run(
            ["debugfs", "-R", "ls /boot/extlinux", str(raw)], capture_output=True, text=True
        ).stdout
    )
    os.unlink(raw)
    line, console = _boot_and_log_in(image.directory, "debfw-0", "1")
    assert "SYSLINUX 6.04" in console  # extlinux's banner on the serial console
    assert f"root=LABEL={recipe.ROOT_LABEL}" in console  # extlinux's command line
    print("\n" + line)
