"""The Debian base image (images/debian) and ``kvmss image build``, without
building the image: the recipe (its cloud-init configuration against the
real cloud-init's schema, mirrors, the cache key), the version stamp on a
hard-linked copy, the cache's reuse and pruning, and building (the tiny
image) and publishing through kvmss.client.imagebuild to a real controller. Real
Debian builds and boots are in test_debian_guests.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
import yaml
from click.testing import CliRunner

from bench.served import free_port
from controller.daemon.server import ControllerConfig
from controller.daemon.server import build as build_controller
from images.debian import build as debian_build
from images.debian import disk, recipe, rootfs
from images.tiny.host import BuildError
from images.tiny.manifest import Manifest
from kvmss.cli.main import main as cli_main
from kvmss.client import imagebuild
from kvmss.client.api import ApiClient
from tests import debianimage
from tests.fixtures import make_qcow2

CLOUD_CFG = recipe.GUEST_ROOTFS / "etc/cloud/cloud.cfg.d/90-kvmss.cfg"
DEBIAN_OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"""


# --- the recipe ------------------------------------------------------------


def test_cloud_config_passes_cloud_inits_own_schema(tmp_path: Path) -> None:
    text = CLOUD_CFG.read_text()
    cfg = yaml.safe_load(text)
    assert cfg["datasource_list"] == ["NoCloud", "None"]
    assert cfg["ssh_pwauth"] is False and cfg["disable_root"] is True
    # `locale: false` would skip the module too, but fails the schema check.
    assert cfg["locale"] == "C.UTF-8"
    assert (recipe.GUEST_ROOTFS / "etc/default/locale").read_text() == "LANG=C.UTF-8\n"
    doc = tmp_path / "cfg.yaml"
    doc.write_text("#cloud-config\n" + text)
    proc = subprocess.run(
        ["cloud-init", "schema", "-c", str(doc)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Valid cloud-config" in proc.stdout
    doc.write_text("#cloud-config\n" + text.replace("locale: C.UTF-8", "locale: false"))
    proc = subprocess.run(
        ["cloud-init", "schema", "-c", str(doc)], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0  # the check above can fail


def test_initramfs_lists_the_root_disk_modules_and_boot_is_serial() -> None:
    listed = (recipe.GUEST_ROOTFS / "usr/share/initramfs-tools/modules.d/kvmss").read_text()
    assert {"virtio_pci", "virtio_blk", "ext4"} <= set(listed.split())
    conf = (recipe.GUEST_ROOTFS / "etc/initramfs-tools/conf.d/kvmss.conf").read_text()
    assert "MODULES=list" in conf.split()
    words = recipe.CMDLINE.split()
    assert {"root=/dev/vda", "rw", "console=ttyS0", "net.ifnames=0"} <= set(words)
    fstab = (recipe.GUEST_ROOTFS / "etc/fstab").read_text()
    assert f"LABEL={recipe.ROOT_LABEL}" in fstab


def test_host_mirrors_come_from_deb822_and_one_line_sources(tmp_path: Path) -> None:
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\n"
        "# a comment\n"
        "URIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "\n"
        "Types: deb\n"
        "URIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "\n"
        "Types: deb\n"
        "URIs: https://deb.nodesource.com/node_20.x\n"
        "Suites: nodistro\n"
        "Components: main\n"
    )
    (d / "other.list").write_text("deb [arch=amd64] https://elsewhere.example/apt stable main\n")
    got = recipe.host_mirrors([tmp_path / "missing.list", d])
    assert got == recipe.Mirrors(
        "http://mirror.example/debian", "http://mirror.example/debian-security"
    )
    one_line = tmp_path / "sources.list"
    one_line.write_text("# old style\ndeb http://old.example/debian bookworm main contrib\n")
    assert recipe.host_mirrors([one_line]).archive == "http://old.example/debian"
    assert recipe.host_mirrors([one_line]).security == recipe.DEFAULT_SECURITY_MIRROR
    assert recipe.host_mirrors([tmp_path / "none"]) == recipe.Mirrors()
    sources = recipe.Mirrors("http://a.example/debian", "http://b.example/sec").sources_list()
    assert sources.splitlines() == [
        "deb http://a.example/debian bookworm main",
        "deb http://a.example/debian bookworm-updates main",
        "deb http://b.example/sec bookworm-security main",
    ]


@pytest.mark.parametrize("url", ["ftp://x/debian", "http://x/deb ian", "http://x/$(id)", ""])
def test_mirrors_must_be_plain_http_urls(url: str) -> None:
    with pytest.raises(ValueError, match="mirror archive"):
        recipe.Mirrors(archive=url)


def test_tree_key_follows_packages_mirrors_and_guest_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = recipe.tree_key(recipe.Mirrors())
    assert len(base) == 64 and base == recipe.tree_key(recipe.Mirrors())
    assert recipe.tree_key(recipe.Mirrors(), (*recipe.PACKAGES, "vim")) != base
    assert recipe.tree_key(recipe.Mirrors(archive="http://m.example/debian")) != base
    # order of the package list does not matter, its content does
    assert recipe.tree_key(recipe.Mirrors(), tuple(reversed(recipe.PACKAGES))) == base
    guest = tmp_path / "rootfs"
    shutil.copytree(recipe.GUEST_ROOTFS, guest)
    monkeypatch.setattr(recipe, "GUEST_ROOTFS", guest)
    assert recipe.tree_key(recipe.Mirrors()) == base
    (guest / "etc/fstab").write_text("# changed\n")
    assert recipe.tree_key(recipe.Mirrors()) != base


# --- the version stamp -------------------------------------------------------


def _small_tree(root: Path) -> None:
    (root / "usr/lib").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "usr/lib/os-release").write_text(DEBIAN_OS_RELEASE)
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    (root / "etc/hostname").write_text("localhost\n")
    (root / "bin").mkdir()
    (root / "bin/tool").write_bytes(b"\x7fELF")


def test_stamp_on_a_hard_linked_copy_leaves_the_cached_tree_as_it_was(tmp_path: Path) -> None:
    tree, staged = tmp_path / "tree", tmp_path / "staged"
    _small_tree(tree)
    before = (tree / "usr/lib/os-release").read_bytes()
    disk.stage(tree, staged)
    disk.stamp(staged, "7")
    assert (staged / "etc/os-version").read_text() == "7\n"
    release = (staged / "etc/os-release").read_text()  # through Debian's symlink
    assert "IMAGE_VERSION=7\n" in release and "IMAGE_ID=kvmss-debian\n" in release
    assert 'VERSION="12 (bookworm)"\n' in release and "ID=debian\n" in release
    # the cache: untouched, and the files the stamp did not change are shared
    assert (tree / "usr/lib/os-release").read_bytes() == before
    assert not (tree / "etc/os-version").exists()
    assert (staged / "bin/tool").stat().st_ino == (tree / "bin/tool").stat().st_ino
    assert (staged / "usr/lib/os-release").stat().st_ino != (
        tree / "usr/lib/os-release"
    ).stat().st_ino
    assert (staged / "etc/os-release").is_symlink()


def test_a_second_stamp_replaces_the_first() -> None:
    twice = disk.os_release(disk.os_release(DEBIAN_OS_RELEASE, "1"), "2")
    assert twice.count("IMAGE_VERSION=") == 1 and "IMAGE_VERSION=2\n" in twice
    assert twice.count("VARIANT_ID=kvmss") == 1


def test_extlinux_conf_boots_the_image_kernel_by_label() -> None:
    conf = disk.extlinux_conf("6.1.0-99-amd64")
    assert "LINUX /boot/vmlinuz-6.1.0-99-amd64" in conf
    assert "INITRD /boot/initrd.img-6.1.0-99-amd64" in conf
    append = next(line for line in conf.splitlines() if "APPEND" in line).split()
    assert f"root=LABEL={recipe.ROOT_LABEL}" in append and "console=ttyS0" in append
    assert "root=/dev/vda" not in append and "edd=off" in append


# --- the cache ---------------------------------------------------------------


def _fake_cached_tree(cache: Path, key: str, kernel: str = "6.1.0-1-amd64") -> Path:
    """A cache entry as ensure_tree leaves one (a tree with a kernel)."""
    entry = cache / key
    (entry / "tree/boot").mkdir(parents=True)
    (entry / f"tree/boot/vmlinuz-{kernel}").write_bytes(b"kernel")
    (entry / f"tree/boot/initrd.img-{kernel}").write_bytes(b"initrd")
    info = {"key": key, "kernelVersion": kernel, "packages": {"cloud-init": "22.4.2-1"}}
    (entry / "tree.json").write_text(json.dumps(info))
    return entry


@pytest.fixture
def no_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATH without debootstrap: any attempt to build a tree fails."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


def test_a_cached_tree_is_reused_and_never_rebuilt(tmp_path: Path, no_tools: None) -> None:
    cache = rootfs.cache_dir(tmp_path / "cache")
    mirrors = recipe.Mirrors()
    key = recipe.tree_key(mirrors)
    entry = _fake_cached_tree(cache, key)
    tree = rootfs.ensure_tree(cache, mirrors)
    assert tree.reused and tree.key == key and tree.path == entry / "tree"
    assert tree.kernel_image().read_bytes() == b"kernel"
    assert tree.packages == {"cloud-init": "22.4.2-1"}
    # A refresh rebuilds: here it fails (no debootstrap), and the tree that
    # was there is kept, with nothing half-built left next to it.
    with pytest.raises(BuildError, match="debootstrap is not installed"):
        rootfs.ensure_tree(cache, mirrors, refresh=True)
    assert rootfs.ensure_tree(cache, mirrors).path == entry / "tree"
    assert sorted(p.name for p in cache.iterdir()) == [key]


def test_an_incomplete_or_foreign_entry_is_not_used(tmp_path: Path, no_tools: None) -> None:
    cache = rootfs.cache_dir(tmp_path / "cache")
    mirrors = recipe.Mirrors()
    key = recipe.tree_key(mirrors)
    entry = _fake_cached_tree(cache, key)
    (entry / "tree/boot/vmlinuz-6.1.0-1-amd64").unlink()  # a tree without its kernel
    with pytest.raises(BuildError, match="debootstrap"):
        rootfs.ensure_tree(cache, mirrors)
    shutil.rmtree(entry)
    _fake_cached_tree(cache, key)
    info = json.loads((entry / "tree.json").read_text())
    (entry / "tree.json").write_text(json.dumps({**info, "key": "0" * 64}))
    with pytest.raises(BuildError, match="debootstrap"):
        rootfs.ensure_tree(cache, mirrors)


def test_prune_keeps_one_tree_and_what_is_not_the_caches(tmp_path: Path) -> None:
    cache = rootfs.cache_dir(tmp_path / "cache")
    keep, old = "a" * 64, "b" * 64
    for key in (keep, old):
        _fake_cached_tree(cache, key)
    for left in (".new-0123-99", ".stage-xyz", "notes"):
        (cache / left).mkdir()
    (cache / ".lock").write_text("")
    rootfs.prune(cache, keep)
    assert sorted(p.name for p in cache.iterdir()) == [".lock", keep, "notes"]


# --- the manifest's boot mode --------------------------------------------------


def _manifest_json(**extra: object) -> dict[str, object]:
    f = {"file": "x", "sha256": "0" * 64, "size": 1}
    doc: dict[str, object] = {
        "name": "debian",
        "version": "1",
        "disk": {**f, "file": "disk.qcow2"},
        "kernel": {**f, "file": "vmlinuz"},
        "initrd": {**f, "file": "initrd.img"},
        "cmdline": "root=/dev/vda",
        "kernelVersion": "6.1",
        "recipe": "r",
        "inputs": "i",
    }
    return {**doc, **extra}


def test_manifest_boot_defaults_to_kernel_and_knows_firmware() -> None:
    assert Manifest.from_json(_manifest_json()).boot == "kernel"  # manifests before "boot"
    m = Manifest.from_json(_manifest_json(boot="firmware"))
    assert m.boot == "firmware" and m.to_json()["boot"] == "firmware"
    with pytest.raises(ValueError, match="boot must be one of kernel, firmware"):
        Manifest.from_json(_manifest_json(boot="pxe"))


def test_build_rejects_bad_arguments_before_doing_anything(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="version"):
        debian_build.build("../1", out)
    with pytest.raises(ValueError, match="boot 'uefi'"):
        debian_build.build("1", out, boot="uefi")
    with pytest.raises(ValueError, match="disk size 1 GB"):
        debian_build.build("1", out, disk_gb=1)
    assert not out.exists()


# --- kvmss image build / publish ----------------------------------------------


def test_imagebuild_needs_the_source_checkout(tmp_path: Path) -> None:
    with pytest.raises(imagebuild.ImageBuildError, match="needs the kvmss source checkout"):
        imagebuild.build("tiny", "1", root=tmp_path)
    with pytest.raises(imagebuild.ImageBuildError, match="image 'centos' is unknown"):
        imagebuild.build("centos", "1")
    with pytest.raises(imagebuild.ImageBuildError, match="'tiny' boots only with its kernel"):
        imagebuild.build("tiny", "1", boot="firmware")
    images = imagebuild.CHECKOUT / "build" / "images"
    assert imagebuild.default_out("debian", "3") == images / "debian-3"
    assert imagebuild.default_out("debian", "3", "firmware") == images / "debian-fw-3"
    assert imagebuild.default_out("debian", "3") == debianimage.image_dir("3")


def test_imagebuild_reports_the_recipes_own_reason(tmp_path: Path) -> None:
    lines: list[str] = []
    with pytest.raises(imagebuild.ImageBuildError) as info:
        imagebuild.build("debian", "bad/version", tmp_path / "out", on_line=lines.append)
    message = str(info.value)
    assert message.startswith("building debian bad/version failed (exit code 1):")
    assert "version 'bad/version' is invalid" in message
    assert lines and "images.debian.build:" in lines[-1]


def test_cli_image_build_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(cli_main, ["image", "build", "debian", "--version", "x y"])
    assert r.exit_code == 1
    assert r.stderr.count("\n") >= 1 and r.stderr.splitlines()[-1].startswith("kvmss: building")
    assert "Traceback" not in r.output
    r = runner.invoke(cli_main, ["image", "build", "tiny", "--version", "1", "--boot", "firmware"])
    assert r.exit_code == 2 and "--boot: only the debian image" in r.stderr
    r = runner.invoke(cli_main, ["image", "build", "tiny", "--version", "1", "--publish"])
    assert r.exit_code == 2 and "no token" in r.stderr


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[ApiClient]:
    """A real controller (SQLite, catalog, HTTP API) on loopback."""
    port = free_port()
    cfg = ControllerConfig.from_dict(
        {
            "listen": f"127.0.0.1:{port}",
            "token": "image-build-test-token",
            "database": str(tmp_path / "ctl" / "kvmss.db"),
            "blob_dir": str(tmp_path / "ctl" / "images"),
        }
    )
    ctl, app = build_controller(cfg)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield ApiClient(f"http://127.0.0.1:{port}", "image-build-test-token")
    finally:
        ctl.close()
        server.should_exit = True
        thread.join(10)
        ctl.store.close()


def test_cli_builds_and_publishes_the_tiny_image(
    tmp_path: Path, controller: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "tiny-5"
    monkeypatch.setenv("KVMSS_URL", controller.base_url)
    monkeypatch.setenv("KVMSS_TOKEN", "image-build-test-token")
    r = CliRunner().invoke(
        cli_main,
        ["image", "build", "tiny", "--version", "5", "--out", str(out), "--publish", "-o", "json"],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["directory"] == str(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert doc["manifest"] == manifest
    assert "images.tiny.build: tiny 5" in r.stderr  # the recipe's progress, passed on
    published = controller.get("/v1/images/kvmss/tiny/1/5")
    assert published["sha256"] == manifest["disk"]["sha256"] == doc["published"]["sha256"]
    assert published["kernelSha256"] == manifest["kernel"]["sha256"]
    assert published["initrdSha256"] == manifest["initrd"]["sha256"]
    assert published["cmdline"] == manifest["cmdline"]
    assert "image-build-test-token" not in r.output


def test_publish_of_a_firmware_image_sends_only_the_disk(
    tmp_path: Path, controller: ApiClient
) -> None:
    image = tmp_path / "fw"
    image.mkdir()
    sha = make_qcow2(image / "disk.qcow2", b"firmware-boot")
    for name in ("vmlinuz", "initrd.img"):
        (image / name).write_bytes(name.encode())
    doc = _manifest_json(boot="firmware")
    doc["disk"] = {
        "file": "disk.qcow2",
        "sha256": sha,
        "size": (image / "disk.qcow2").stat().st_size,
    }
    (image / "manifest.json").write_text(json.dumps(doc))
    published = imagebuild.publish(controller, image, "kvmss", "debian-fw", "1", "3")
    assert published["sha256"] == sha
    got = controller.get("/v1/images/kvmss/debian-fw/1/3")
    assert got["sha256"] == sha
    assert "kernelSha256" not in got and "cmdline" not in got
    (image / "disk.qcow2").unlink()
    with pytest.raises(imagebuild.ImageBuildError, match=r"disk file disk\.qcow2 is missing"):
        imagebuild.publish(controller, image, "kvmss", "debian-fw", "1", "4")
