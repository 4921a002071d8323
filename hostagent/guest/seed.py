"""NoCloud seeds: the ISO (volume label ``cidata``) cloud-init and the tiny
image read ``meta-data``, ``user-data`` and ``network-config`` from.

YAML is written by PyYAML only, block style, in the exact shape the tiny
image's awk parser (images/tiny/guest/rootfs/usr/libexec/kvmss/yaml-flat.awk)
reads. The ISO is built with pycdlib (ISO9660 + Joliet + Rock Ridge, so both
the kernel's isofs and cloud-init see the lowercase names).
"""

from __future__ import annotations

import io
import ipaddress
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pycdlib
import yaml

from hostagent.disks.layout import SEED_MODE
from kvmss.base import atomicfile

VOLUME_LABEL = "cidata"
_MAC_RE = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$")

# (Rock Ridge / Joliet name, ISO9660 level-1 name)
_FILES = {
    "meta_data": ("meta-data", "/METADATA.;1"),
    "user_data": ("user-data", "/USERDATA.;1"),
    "network_config": ("network-config", "/NETWORKC.;1"),
}


class SeedError(ValueError):
    """A seed ISO that cannot be read back (not a seed, or a file missing)."""


@dataclass(frozen=True)
class SeedContent:
    meta_data: str
    # user-data carries the guest's report token: kept out of repr (logs).
    user_data: str = field(repr=False)
    network_config: str


def meta_data(instance_id: str, hostname: str) -> str:
    """``instance-id: ...`` and ``local-hostname: ...``; a new instance-id is
    what makes cloud-init run per-instance modules (the extensions) again."""
    if not instance_id or not instance_id.isprintable():
        raise ValueError("instance_id must be a non-empty printable string")
    if not hostname or not hostname.isprintable():
        raise ValueError("hostname must be a non-empty printable string")
    return _dump({"instance-id": instance_id, "local-hostname": hostname})


class _Quoted(str):
    """A string PyYAML writes in single quotes whatever it looks like."""


class _SeedDumper(yaml.SafeDumper):
    pass


def _represent_quoted(dumper: yaml.SafeDumper, data: _Quoted) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style="'")


_SeedDumper.add_representer(_Quoted, _represent_quoted)


def network_config(
    mac: str, address_cidr: str, gateway: str | None, nameservers: Sequence[str] = ()
) -> str:
    """cloud-init network config v2 for one NIC, matched by MAC and named eth0.

    The MAC is always single-quoted (PyYAML would quote only MACs that look
    like YAML 1.1 sexagesimal numbers, e.g. all-digit ones).
    """
    mac_l = mac.lower()
    if not _MAC_RE.fullmatch(mac_l):
        raise ValueError(f"mac {mac[:40]!r} is not a MAC address (six hex pairs with ':')")
    try:
        address = ipaddress.ip_interface(address_cidr)
    except ValueError:
        raise ValueError(f"address_cidr {address_cidr[:60]!r} is not an address/prefix") from None
    if "/" not in address_cidr:
        raise ValueError(f"address_cidr {address_cidr[:60]!r} needs a prefix length (/24)")
    eth0: dict[str, Any] = {
        "match": {"macaddress": _Quoted(mac_l)},
        "set-name": "eth0",
        "addresses": [address.with_prefixlen],
    }
    if gateway is not None:
        via = _ip(gateway, "gateway")
        # "0.0.0.0/0", not "default": bookworm's cloud-init (22.4) rejects the
        # latter ("Address default is not a valid ip network").
        everything = "0.0.0.0/0" if via.version == 4 else "::/0"
        eth0["routes"] = [{"to": everything, "via": str(via)}]
    if nameservers:
        eth0["nameservers"] = {
            "addresses": [str(_ip(n, "nameservers")) for n in nameservers],
        }
    return _dump({"version": 2, "ethernets": {"eth0": eth0}})


def _ip(value: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{what}: {value[:60]!r} is not an IP address") from None


def _dump(data: dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=_SeedDumper, sort_keys=False, default_flow_style=False)


def write_seed_iso(path: Path, content: SeedContent) -> None:
    """Write the seed ISO at ``path`` through ``<path>.iso.part`` and a rename,
    so a reader never sees half an ISO.

    Mode 0600 from its creation: it carries customData, protectedSettings and
    the guest's report token. libvirt (dynamic_ownership) hands it to its QEMU
    user while the guest runs."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_LABEL)
    try:
        for attr, (name, iso_path) in _FILES.items():
            data = getattr(content, attr).encode("utf-8")
            iso.add_fp(
                io.BytesIO(data),
                len(data),
                iso_path,
                rr_name=name,
                joliet_path="/" + name,
                file_mode=0o100444,
            )
        out = io.BytesIO()
        iso.write_fp(out)
    finally:
        iso.close()

    part = path.with_suffix(".iso.part")
    # A crashed write's leftover keeps its old mode through O_TRUNC: start anew.
    part.unlink(missing_ok=True)
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, SEED_MODE)
        with os.fdopen(fd, "wb") as f:
            # Exactly 0600 whatever the umask, before a byte is written.
            if stat.S_IMODE(os.fstat(fd).st_mode) != SEED_MODE:
                os.fchmod(fd, SEED_MODE)
            f.write(out.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    atomicfile.fsync_dir(path.parent)


def read_seed_iso(path: Path) -> SeedContent:
    """The three files of a seed ISO written by :func:`write_seed_iso` (or by
    genisoimage/xorriso with Rock Ridge); SeedError when it is not one."""
    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(path))
    except pycdlib.pycdlibexception.PyCdlibException as e:
        raise SeedError(f"{path}: not an ISO9660 image ({e})") from None
    try:
        label = iso.pvd.volume_identifier.decode("ascii", "replace").rstrip(" \x00")
        if label.lower() != VOLUME_LABEL:
            raise SeedError(f"{path}: volume label is {label!r}, not {VOLUME_LABEL!r}")
        texts: dict[str, str] = {}
        for attr, (name, _) in _FILES.items():
            out = io.BytesIO()
            try:
                iso.get_file_from_iso_fp(out, rr_path="/" + name)
            except pycdlib.pycdlibexception.PyCdlibException:
                raise SeedError(f"{path}: no {name} file") from None
            texts[attr] = out.getvalue().decode("utf-8")
    finally:
        iso.close()
    return SeedContent(**texts)
