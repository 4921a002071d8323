"""The tiny base image (images/tiny): what the build writes and its pieces;
how it behaves when QEMU boots it is in test_tiny_guests."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from hostagent.guest import seed
from images.tiny import build as tiny_build
from images.tiny.host import BuildError
from images.tiny.initramfs import DeviceNode, write_initramfs
from images.tiny.initrd import BOOT_MODULES
from images.tiny.kernel import ModuleIndex, find_kernel
from images.tiny.manifest import Manifest, sha256_file
from kvmss.base import qemuimg
from tests.leftovers import mark_owner

TEST_ROOT = Path("/var/tmp/kvmss-tests")
GUEST = Path(tiny_build.__file__).parent / "guest"
YAML_FLAT = GUEST / "rootfs/usr/libexec/kvmss/yaml-flat.awk"


def _scratch(prefix: str) -> Path:
    """A fresh 0755 directory under /var/tmp/kvmss-tests (libvirt-qemu can traverse it)."""
    TEST_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=TEST_ROOT))
    d.chmod(0o755)
    mark_owner(d)
    return d


@pytest.fixture
def scratch() -> Iterator[Path]:
    d = _scratch("tiny-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@dataclass
class Built:
    out: Path
    manifest: Manifest
    seconds: float


@pytest.fixture(scope="module")
def two_versions() -> Iterator[tuple[Built, Built]]:
    base = _scratch("tiny-build-")
    built = []
    for version in ("1.0", "2.0"):
        started = time.monotonic()
        manifest = tiny_build.build(version, base / version)
        built.append(Built(base / version, manifest, time.monotonic() - started))
    print(f"\ntiny image build times: {[round(b.seconds, 2) for b in built]} s")
    yield built[0], built[1]
    shutil.rmtree(base, ignore_errors=True)


def _debugfs_read(raw: Path, path: str) -> bytes:
    proc = subprocess.run(
        ["debugfs", "-R", f"cat {path}", str(raw)], capture_output=True, check=True
    )
    return proc.stdout


def _debugfs_cat(raw: Path, path: str) -> str:
    return _debugfs_read(raw, path).decode()


def _raw_copy(built: Built, scratch: Path) -> Path:
    raw = scratch / f"disk-{built.manifest.version}.raw"
    qemuimg.convert(built.out / "disk.qcow2", raw, src_format="qcow2", dst_format="raw")
    return raw


# --- the build -------------------------------------------------------------


def test_build_writes_files_matching_manifest(two_versions: tuple[Built, Built]) -> None:
    kernel = find_kernel()
    for b in two_versions:
        m = b.manifest
        assert b.seconds < 30
        on_disk = json.loads((b.out / "manifest.json").read_text())
        assert on_disk == m.to_json()
        assert on_disk["name"] == "tiny"
        assert {on_disk[k]["file"] for k in ("disk", "kernel", "initrd")} == {
            "disk.qcow2",
            "vmlinuz",
            "initrd.img",
        }
        for f in m.files():
            path = b.out / f.file
            assert sha256_file(path) == f.sha256
            assert path.stat().st_size == f.size
            assert path.stat().st_mode & 0o777 == 0o644
        assert (b.out / "vmlinuz").read_bytes() == kernel.image.read_bytes()
        assert m.kernel_version == kernel.version
        for token in ("root=/dev/vda", "rw", "console=ttyS0", "net.ifnames=0", "panic=-1"):
            assert token in m.cmdline.split()
        assert not [p for p in b.out.iterdir() if p.name.startswith(".build-")]


def test_disk_is_a_standalone_qcow2_of_a_whole_disk_ext4(
    two_versions: tuple[Built, Built], scratch: Path
) -> None:
    b = two_versions[0]
    info = qemuimg.info(b.out / "disk.qcow2", "qcow2")
    assert info.format == "qcow2"
    assert info.backing_file is None
    assert info.virtual_size == tiny_build.DISK_SIZE_BYTES
    assert qemuimg.check(b.out / "disk.qcow2").ok
    raw = _raw_copy(b, scratch)
    # An ext4 superblock at offset 0 of the disk and spanning all of it.
    header = subprocess.run(
        ["dumpe2fs", "-h", str(raw)], capture_output=True, text=True, check=True
    ).stdout
    fields = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in header.splitlines())
    )
    assert "extent" in fields["Filesystem features"]
    assert int(fields["Block count"]) * int(fields["Block size"]) == tiny_build.DISK_SIZE_BYTES
    assert fields["Filesystem volume name"] == "kvmss-root"


def test_versions_differ_in_os_version(two_versions: tuple[Built, Built], scratch: Path) -> None:
    shas = set()
    for b in two_versions:
        raw = _raw_copy(b, scratch)
        v = b.manifest.version
        assert _debugfs_cat(raw, "/etc/os-version") == f"{v}\n"
        assert f"VERSION_ID={v}\n" in _debugfs_cat(raw, "/etc/os-release")
        shas.add(b.manifest.disk.sha256)
    assert len(shas) == 2


def test_root_filesystem_holds_tools_scripts_and_runtime_modules(
    two_versions: tuple[Built, Built], scratch: Path
) -> None:
    raw = _raw_copy(two_versions[0], scratch)
    listing = subprocess.run(
        ["debugfs", "-R", "stat /usr/libexec/kvmss/boot", str(raw)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Mode:  0755" in listing
    assert _debugfs_cat(raw, "/usr/libexec/kvmss/boot").startswith("#!/bin/sh")
    assert "::sysinit:/usr/libexec/kvmss/boot" in _debugfs_cat(raw, "/etc/inittab")
    # Real mkfs.ext4 (an ELF), not busybox's ext2-only mke2fs.
    assert _debugfs_read(raw, "/sbin/mke2fs")[:4] == b"\x7fELF"
    kver = two_versions[0].manifest.kernel_version
    load = _debugfs_cat(raw, f"/lib/modules/{kver}/kvmss-load").split("\n")
    names = [line.split()[0] for line in load if line]
    for name in ("ahci", "sr_mod", "isofs", "virtio_net", "button", "evdev"):
        assert name in names
    # Dependencies first; nothing the initrd already loaded.
    assert names.index("scsi_mod") < names.index("libata") < names.index("ahci")
    assert names.index("cdrom") < names.index("sr_mod")
    assert names.index("failover") < names.index("net_failover") < names.index("virtio_net")
    assert "virtio" not in names and "ext4" not in names
    for line in load:
        if line:
            path = line.split()[1]
            assert _debugfs_read(raw, f"/lib/modules/{kver}/{path}")[:4] == b"\x7fELF", path


def _cpio(args: list[str], data: bytes) -> bytes:
    return subprocess.run(["cpio", *args], input=data, capture_output=True, check=True).stdout


def test_initrd_holds_busybox_init_and_boot_modules_in_order(
    two_versions: tuple[Built, Built],
) -> None:
    m = two_versions[0].manifest
    archive = gzip.decompress((two_versions[0].out / "initrd.img").read_bytes())
    names = set(_cpio(["-it", "--quiet"], archive).decode().split())
    assert {"init", "bin/busybox", "bin/sh", "bin/switch_root", "dev/console"} <= names
    load = _cpio(
        ["-i", "--quiet", "--to-stdout", f"lib/modules/{m.kernel_version}/kvmss-load"], archive
    ).decode()
    order = [line.split()[0] for line in load.splitlines()]
    assert order == list(BOOT_MODULES)
    # Each module after what it needs: the virtio stack, then ext4's own.
    for first, then in [
        ("virtio_ring", "virtio"),
        ("virtio", "virtio_pci"),
        ("virtio_pci_modern_dev", "virtio_pci"),
        ("virtio_pci", "virtio_blk"),
        ("crc16", "ext4"),
        ("mbcache", "ext4"),
        ("jbd2", "ext4"),
        ("crc32c_generic", "ext4"),
    ]:
        assert order.index(first) < order.index(then), (first, then)


def test_same_version_is_reused_and_a_changed_recipe_rebuilds(scratch: Path) -> None:
    first = tiny_build.build("3", scratch)
    disk = scratch / "disk.qcow2"
    stamp = disk.stat().st_mtime_ns
    assert tiny_build.build("3", scratch) == first
    assert disk.stat().st_mtime_ns == stamp

    # A manifest made by another recipe is not reused.
    doc = json.loads((scratch / "manifest.json").read_text())
    doc["recipe"] = "0" * 64
    (scratch / "manifest.json").write_text(json.dumps(doc))
    again = tiny_build.build("3", scratch)
    assert again.recipe == first.recipe
    assert disk.stat().st_mtime_ns != stamp
    # Rebuilding the same version gives the same bytes.
    assert again == first

    # Neither are files that no longer match the manifest.
    stamp = disk.stat().st_mtime_ns
    with (scratch / "initrd.img").open("r+b") as f:
        f.truncate(100)
    assert tiny_build.build("3", scratch) == first
    assert sha256_file(scratch / "initrd.img") == first.initrd.sha256
    assert disk.stat().st_mtime_ns != stamp

    # A different version replaces everything, manifest included.
    other = tiny_build.build("4", scratch)
    assert other.disk.sha256 != first.disk.sha256
    assert Manifest.load(scratch / "manifest.json") == other


def test_build_rejects_a_bad_version(scratch: Path) -> None:
    for bad in ("", "../1", "1 2", "-1", "a" * 65, "1\n"):
        with pytest.raises(ValueError, match="version"):
            tiny_build.build(bad, scratch / "out")
    assert not (scratch / "out").exists()


def test_cli_prints_the_manifest(scratch: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "images.tiny.build",
            "--version",
            "5",
            "--out",
            str(scratch),
        ],
        capture_output=True,
        text=True,
        cwd=Path(tiny_build.__file__).parents[2],
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == json.loads((scratch / "manifest.json").read_text())
    bad = subprocess.run(
        [sys.executable, "-m", "images.tiny.build", "--version", "x/y", "--out", str(scratch)],
        capture_output=True,
        text=True,
        cwd=Path(tiny_build.__file__).parents[2],
        check=False,
    )
    assert bad.returncode == 1
    assert "version 'x/y' is invalid" in bad.stderr


# --- pieces ----------------------------------------------------------------


def test_module_resolution_puts_dependencies_first() -> None:
    kernel = find_kernel()
    index = ModuleIndex(kernel)
    mods = index.resolve(["virtio_net", "af_packet", "virtio-rng"])
    names = [m.name for m in mods]
    assert {"virtio_net", "virtio_rng", "failover", "virtio"} <= set(names)
    assert "af_packet" not in names and index.is_builtin("af_packet")
    assert len(names) == len(set(names))
    deps: dict[str, list[str]] = {}
    for line in (kernel.modules_dir / "modules.dep").read_text().splitlines():
        head, _, tail = line.partition(":")
        deps[Path(head).name.split(".ko")[0].replace("-", "_")] = [
            Path(d).name.split(".ko")[0].replace("-", "_") for d in tail.split()
        ]
    for i, name in enumerate(names):
        for dep in deps[name]:
            assert dep in names[:i], f"{dep} must load before {name}"
    with pytest.raises(BuildError, match="'no_such_module'"):
        index.resolve(["no_such_module"])


def test_initramfs_is_a_newc_archive_cpio_reads(scratch: Path) -> None:
    tree = scratch / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "dev").mkdir()
    (tree / "init").write_text("#!/bin/sh\necho hi\n")
    (tree / "init").chmod(0o755)
    (tree / "bin" / "data").write_bytes(b"x" * 5)
    (tree / "bin" / "sh").symlink_to("busybox")
    out = scratch / "initrd.img"
    nodes = [DeviceNode("dev/console", "c", 5, 1, 0o600)]
    write_initramfs(tree, out, mtime=1_700_000_000, nodes=nodes)
    archive = gzip.decompress(out.read_bytes())
    listing = _cpio(["-itv", "--quiet"], archive).decode().splitlines()
    by_name = {line.split()[-1] if "->" not in line else line.split()[-3]: line for line in listing}
    assert set(by_name) == {"bin", "bin/data", "bin/sh", "dev", "dev/console", "init"}
    assert by_name["init"].startswith("-rwxr-xr-x")
    assert by_name["dev/console"].startswith("crw-------")
    assert re.search(r"\b5,\s*1\b", by_name["dev/console"])
    assert by_name["bin/sh"].startswith("lrwxrwxrwx") and by_name["bin/sh"].endswith("-> busybox")
    assert all(" root " in line for line in listing)
    assert _cpio(["-i", "--quiet", "--to-stdout", "bin/data"], archive) == b"xxxxx"
    # Same tree, same bytes.
    again = scratch / "again.img"
    write_initramfs(tree, again, mtime=1_700_000_000, nodes=nodes)
    assert again.read_bytes() == out.read_bytes()


def test_guest_shell_scripts_parse() -> None:
    scripts = [p for p in GUEST.rglob("*") if p.is_file() and p.read_bytes().startswith(b"#!")]
    assert len(scripts) >= 5
    for script in scripts:
        proc = subprocess.run(["busybox", "sh", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"


def _flatten(text: str) -> dict[str, str]:
    proc = subprocess.run(
        ["busybox", "awk", "-f", str(YAML_FLAT)],
        input=text,
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stderr == ""
    return dict(line.split("=", 1) for line in proc.stdout.splitlines())


@pytest.mark.parametrize("sort_keys", [False, True])
def test_guest_yaml_reader_understands_safe_dump_network_config(sort_keys: bool) -> None:
    # What the agent writes into the seed, plus an interface with no address.
    written = seed.network_config("52:54:00:12:34:56", "10.77.0.5/24", "10.77.0.1", ["10.77.0.1"])
    config = yaml.safe_load(written)
    config["ethernets"]["eth1"] = {"match": {"macaddress": "52:54:00:ab:cd:ef"}, "addresses": []}
    flat = _flatten(yaml.safe_dump(config, sort_keys=sort_keys))
    assert flat == {
        "version": "2",
        "ethernets.eth0.match.macaddress": "52:54:00:12:34:56",
        "ethernets.eth0.set-name": "eth0",
        "ethernets.eth0.addresses.0": "10.77.0.5/24",
        "ethernets.eth0.routes.0.to": "0.0.0.0/0",
        "ethernets.eth0.routes.0.via": "10.77.0.1",
        "ethernets.eth0.nameservers.addresses.0": "10.77.0.1",
        "ethernets.eth1.match.macaddress": "52:54:00:ab:cd:ef",
        "ethernets.eth1.addresses": "[]",
    }


def test_guest_yaml_reader_understands_meta_data_and_indented_lists() -> None:
    meta = yaml.safe_dump({"instance-id": "i-web-0-g2-3f9c2a", "local-hostname": "web-0"})
    assert _flatten(meta) == {"instance-id": "i-web-0-g2-3f9c2a", "local-hostname": "web-0"}
    text = "a:\n  - 'it''s'\n  - k: \"q\"\n    j: 2\nb: x: y\n"
    assert _flatten(text) == {"a.0": "it's", "a.1.k": "q", "a.1.j": "2", "b": "x: y"}
