"""hostagent.guest.seed: NoCloud meta-data / network-config YAML and the cidata ISO."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pycdlib
import pytest
import yaml

from hostagent.guest import seed

REPO = Path(__file__).resolve().parents[3]
YAML_FLAT_AWK = REPO / "images/tiny/guest/rootfs/usr/libexec/kvmss/yaml-flat.awk"

EXPECTED_NETWORK_CONFIG = """\
version: 2
ethernets:
  eth0:
    match:
      macaddress: '52:54:00:12:34:56'
    set-name: eth0
    addresses:
    - 10.77.0.5/24
    routes:
    - to: 0.0.0.0/0
      via: 10.77.0.1
    nameservers:
      addresses:
      - 10.77.0.1
"""

CONTENT = seed.SeedContent(
    meta_data=seed.meta_data("i-web-0-g2-abcdef", "web-0"),
    user_data="#!/bin/sh\nKVMSS_TOKEN_B64='c2VjcmV0'\necho ünïcode\n",
    network_config=EXPECTED_NETWORK_CONFIG,
)


# ---- YAML ---------------------------------------------------------------------------


def test_meta_data_is_exactly_two_keys() -> None:
    text = seed.meta_data("i-web-0-g2-abcdef", "web-0")
    assert text == "instance-id: i-web-0-g2-abcdef\nlocal-hostname: web-0\n"
    assert yaml.safe_load(text) == {"instance-id": "i-web-0-g2-abcdef", "local-hostname": "web-0"}


def test_meta_data_quotes_values_yaml_would_misread() -> None:
    text = seed.meta_data("123", "yes")
    assert yaml.safe_load(text) == {"instance-id": "123", "local-hostname": "yes"}


def test_network_config_exact_text() -> None:
    text = seed.network_config("52:54:00:12:34:56", "10.77.0.5/24", "10.77.0.1", ["10.77.0.1"])
    assert text == EXPECTED_NETWORK_CONFIG
    assert yaml.safe_load(text) == {
        "version": 2,
        "ethernets": {
            "eth0": {
                "match": {"macaddress": "52:54:00:12:34:56"},
                "set-name": "eth0",
                "addresses": ["10.77.0.5/24"],
                "routes": [{"to": "0.0.0.0/0", "via": "10.77.0.1"}],
                "nameservers": {"addresses": ["10.77.0.1"]},
            }
        },
    }


def test_network_config_without_gateway_or_nameservers() -> None:
    text = seed.network_config("52:54:00:AB:CD:EF", "10.77.0.9/16", None)
    assert text == (
        "version: 2\n"
        "ethernets:\n"
        "  eth0:\n"
        "    match:\n"
        "      macaddress: '52:54:00:ab:cd:ef'\n"
        "    set-name: eth0\n"
        "    addresses:\n"
        "    - 10.77.0.9/16\n"
    )


def test_network_config_several_nameservers_no_route() -> None:
    parsed = yaml.safe_load(
        seed.network_config("52:54:00:00:00:01", "10.0.0.2/24", None, ["10.0.0.1", "10.0.0.3"])
    )
    eth0 = parsed["ethernets"]["eth0"]
    assert "routes" not in eth0
    assert eth0["nameservers"] == {"addresses": ["10.0.0.1", "10.0.0.3"]}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("52:54:00:12:34", "10.0.0.2/24", None), "mac"),
        (("52:54:00:12:34:56", "10.0.0.2", None), "address_cidr.*prefix"),
        (("52:54:00:12:34:56", "10.0.0.300/24", None), "address_cidr"),
        (("52:54:00:12:34:56", "10.0.0.2/24", "gw"), "gateway"),
    ],
)
def test_network_config_rejects_bad_values(args: tuple[str, str, str | None], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        seed.network_config(*args)


def test_network_config_rejects_bad_nameserver() -> None:
    with pytest.raises(ValueError, match="nameservers"):
        seed.network_config("52:54:00:12:34:56", "10.0.0.2/24", None, ["dns.example"])


def test_tiny_image_awk_parser_reads_the_yaml() -> None:
    """The tiny image flattens these files with busybox awk."""
    busybox = shutil.which("busybox")
    if busybox is None or not YAML_FLAT_AWK.exists():
        pytest.skip("busybox or the tiny image's yaml-flat.awk is missing")
    text = seed.network_config("52:54:00:ab:cd:ef", "10.77.0.5/24", "10.77.0.1", ["10.77.0.1"])
    text += seed.meta_data("i-web-0-g2-abcdef", "web-0")
    flat = subprocess.run(
        [busybox, "awk", "-f", str(YAML_FLAT_AWK)],
        input=text,
        capture_output=True,
        text=True,
        check=True,
    )
    assert flat.stderr == ""
    assert flat.stdout.splitlines() == [
        "version=2",
        "ethernets.eth0.match.macaddress=52:54:00:ab:cd:ef",
        "ethernets.eth0.set-name=eth0",
        "ethernets.eth0.addresses.0=10.77.0.5/24",
        "ethernets.eth0.routes.0.to=0.0.0.0/0",
        "ethernets.eth0.routes.0.via=10.77.0.1",
        "ethernets.eth0.nameservers.addresses.0=10.77.0.1",
        "instance-id=i-web-0-g2-abcdef",
        "local-hostname=web-0",
    ]


def test_seed_content_repr_hides_user_data() -> None:
    assert "c2VjcmV0" not in repr(CONTENT)
    assert "web-0" in repr(CONTENT)


# ---- ISO ------------------------------------------------------------------------------


def test_write_and_read_back(tmp_path: Path) -> None:
    iso = tmp_path / "seed-2.iso"
    seed.write_seed_iso(iso, CONTENT)
    assert seed.read_seed_iso(iso) == CONTENT
    assert iso.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed-2.iso"]


def test_the_part_file_is_private_before_its_first_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A crashed write's leftover .part, readable by everyone: not reused as it is.
    iso = tmp_path / "seed-2.iso"
    leftover = iso.with_suffix(".iso.part")
    leftover.write_bytes(b"old")
    leftover.chmod(0o644)
    modes: list[int] = []
    real_fdopen = os.fdopen

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(os, "fdopen", fdopen)
    old_umask = os.umask(0)
    try:
        seed.write_seed_iso(iso, CONTENT)
    finally:
        os.umask(old_umask)
    assert modes == [0o600]
    assert stat.S_IMODE(iso.stat().st_mode) == 0o600
    assert seed.read_seed_iso(iso) == CONTENT
    assert not leftover.exists()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o277], ids=["022", "077", "277"])
def test_seed_is_0600_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    iso = tmp_path / "seed-1.iso"
    old_umask = os.umask(umask)
    try:
        seed.write_seed_iso(iso, CONTENT)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(iso.stat().st_mode) == 0o600


def test_iso_has_rock_ridge_joliet_and_iso9660_names(tmp_path: Path) -> None:
    iso_path = tmp_path / "seed.iso"
    seed.write_seed_iso(iso_path, CONTENT)
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        assert iso.has_rock_ridge()
        assert iso.has_joliet()
        for name, text in (
            ("user-data", CONTENT.user_data),
            ("meta-data", CONTENT.meta_data),
            ("network-config", CONTENT.network_config),
        ):
            for kwargs in ({"rr_path": "/" + name}, {"joliet_path": "/" + name}):
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, **kwargs)
                assert out.getvalue().decode() == text
        iso9660_names = sorted(
            child.file_identifier().decode()
            for child in iso.list_children(iso_path="/")
            if not (child.is_dot() or child.is_dotdot())
        )
        assert iso9660_names == ["METADATA.;1", "NETWORKC.;1", "USERDATA.;1"]
    finally:
        iso.close()


def test_volume_label_seen_by_blkid_and_xorriso(tmp_path: Path) -> None:
    iso = tmp_path / "seed.iso"
    seed.write_seed_iso(iso, CONTENT)
    blkid = shutil.which("blkid")
    xorriso = shutil.which("xorriso")
    if blkid is None or xorriso is None:
        pytest.skip("blkid or xorriso is missing")
    label = subprocess.run(
        [blkid, "-o", "value", "-s", "LABEL", str(iso)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert label.stdout.strip() == "cidata"
    info = subprocess.run(
        [xorriso, "-indev", str(iso), "-pvd_info"], capture_output=True, text=True, check=True
    )
    assert "Volume Id    : cidata" in info.stdout.splitlines()
    # xorriso reads the Rock Ridge tree, as the guest kernel's isofs does.
    out = tmp_path / "extracted"
    subprocess.run(
        [xorriso, "-osirrox", "on", "-indev", str(iso), "-extract", "/", str(out)],
        capture_output=True,
        check=True,
    )
    assert sorted(p.name for p in out.iterdir()) == ["meta-data", "network-config", "user-data"]
    assert (out / "user-data").read_text() == CONTENT.user_data


def test_rewrite_replaces_the_old_iso(tmp_path: Path) -> None:
    iso = tmp_path / "seed-3.iso"
    seed.write_seed_iso(iso, CONTENT)
    newer = seed.SeedContent(
        meta_data=seed.meta_data("i-web-0-g3-000000", "web-0"),
        user_data="#!/bin/sh\nexit 0\n",
        network_config=CONTENT.network_config,
    )
    seed.write_seed_iso(iso, newer)
    assert seed.read_seed_iso(iso) == newer
    assert not iso.with_suffix(".iso.part").exists()


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        seed.write_seed_iso(tmp_path / "missing-dir" / "seed.iso", CONTENT)
    assert list(tmp_path.iterdir()) == []


def test_read_rejects_what_is_not_a_seed(tmp_path: Path) -> None:
    junk = tmp_path / "junk.iso"
    junk.write_bytes(b"\0" * 65536)
    with pytest.raises(seed.SeedError, match="not an ISO9660 image"):
        seed.read_seed_iso(junk)

    other = pycdlib.PyCdlib()
    other.new(rock_ridge="1.09", vol_ident="OTHER")
    data = b"x"
    other.add_fp(io.BytesIO(data), len(data), "/X.;1", rr_name="x")
    other.write(str(tmp_path / "other.iso"))
    other.close()
    with pytest.raises(seed.SeedError, match="volume label is 'OTHER'"):
        seed.read_seed_iso(tmp_path / "other.iso")

    nofile = pycdlib.PyCdlib()
    nofile.new(rock_ridge="1.09", vol_ident="cidata")
    nofile.add_fp(io.BytesIO(data), len(data), "/METADATA.;1", rr_name="meta-data")
    nofile.write(str(tmp_path / "partial.iso"))
    nofile.close()
    with pytest.raises(seed.SeedError, match="no user-data file"):
        seed.read_seed_iso(tmp_path / "partial.iso")
