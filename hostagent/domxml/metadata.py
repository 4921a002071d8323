"""kvmss's own state in a domain's ``<metadata>`` (see :mod:`hostagent.domxml.domain`):
``<kvmss:instance>`` in the :data:`KVMSS_NS` namespace, with the current and
previous generations, their images and the instance's data disks.
"""

from __future__ import annotations

import ipaddress
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from pydantic import ValidationError

from hostagent.contract import limits
from hostagent.contract.instancespec import ImageReference
from hostagent.domxml.fields import (
    absolute,
    attr,
    boot_triplet,
    check_mac,
    child,
    int_of,
    nonempty,
    one_of,
    set_optional,
)

KVMSS_NS = "https://kvmss.dev/xmlns/instance/1"
KVMSS_PREFIX = "kvmss"
ET.register_namespace(KVMSS_PREFIX, KVMSS_NS)

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def kvmss_tag(tag: str) -> str:
    """Clark notation for an element or attribute in our metadata namespace."""
    return "{" + KVMSS_NS + "}" + tag


@dataclass(frozen=True)
class ImageRecord:
    """Which image a generation was built from: its reference and content hash."""

    reference: ImageReference
    sha256: str

    def __post_init__(self) -> None:
        if not _SHA256_RE.fullmatch(self.sha256):
            raise ValueError(f"image sha256 {self.sha256[:80]!r} is not 64 lowercase hex digits")

    def to_element(self) -> ET.Element:
        return ET.Element(
            kvmss_tag("image"), {**self.reference.model_dump(), "sha256": self.sha256}
        )

    @classmethod
    def from_element(cls, el: ET.Element) -> ImageRecord:
        parts = {name: attr(el, name, "image") for name in ImageReference.model_fields}
        try:
            reference = ImageReference(**parts)
        except ValidationError as e:
            where = ".".join(str(p) for p in e.errors()[0]["loc"])
            raise ValueError(f"image {where}: {e.errors()[0]['msg']}") from None
        return cls(reference=reference, sha256=attr(el, "sha256", "image"))


@dataclass(frozen=True)
class Generation:
    """One OS disk generation of an instance."""

    number: int  # 1, 2, 3... increases at every reimage
    instance_id: str  # the cloud-init instance-id of this generation
    os_disk: str  # absolute path of the qcow2 overlay
    seed: str  # absolute path of the NoCloud seed ISO
    image: ImageRecord
    kernel: str | None = None  # absolute paths for direct kernel boot, None = firmware boot
    initrd: str | None = None
    cmdline: str | None = None

    def __post_init__(self) -> None:
        if self.number < 1:
            raise ValueError(f"generation number {self.number} must be 1 or more")
        nonempty("generation instance_id", self.instance_id)
        absolute("generation os_disk", self.os_disk)
        absolute("generation seed", self.seed)
        boot_triplet("generation", self.kernel, self.initrd, self.cmdline)

    def to_element(self, role: str) -> ET.Element:
        el = ET.Element(
            kvmss_tag("generation"),
            {
                "role": role,
                "number": str(self.number),
                "instance-id": self.instance_id,
                "os-disk": self.os_disk,
                "seed": self.seed,
            },
        )
        set_optional(el, "kernel", self.kernel)
        set_optional(el, "initrd", self.initrd)
        set_optional(el, "cmdline", self.cmdline)
        el.append(self.image.to_element())
        return el

    @classmethod
    def from_element(cls, el: ET.Element) -> Generation:
        where = f"generation {el.get('role', '?')}"
        return cls(
            number=int_of(f"{where} number", el.get("number")),
            instance_id=attr(el, "instance-id", where),
            os_disk=attr(el, "os-disk", where),
            seed=attr(el, "seed", where),
            image=ImageRecord.from_element(child(el, kvmss_tag("image"), where)),
            kernel=el.get("kernel"),
            initrd=el.get("initrd"),
            cmdline=el.get("cmdline"),
        )


@dataclass(frozen=True)
class DataDiskRecord:
    """A data disk the instance owns (kept across every reimage)."""

    lun: int
    size_gb: int
    path: str

    def __post_init__(self) -> None:
        if not limits.LUN_MIN <= self.lun <= limits.LUN_MAX:
            raise ValueError(
                f"data disk lun {self.lun} is out of range {limits.LUN_MIN}-{limits.LUN_MAX}"
            )
        if self.size_gb < limits.DISK_SIZE_GB_MIN:
            raise ValueError(
                f"data disk lun {self.lun}: size_gb {self.size_gb}"
                f" must be {limits.DISK_SIZE_GB_MIN} or more"
            )
        absolute(f"data disk lun {self.lun} path", self.path)

    def to_element(self) -> ET.Element:
        return ET.Element(
            kvmss_tag("data-disk"),
            {"lun": str(self.lun), "size-gb": str(self.size_gb), "path": self.path},
        )

    @classmethod
    def from_element(cls, el: ET.Element) -> DataDiskRecord:
        return cls(
            lun=int_of("data disk lun", el.get("lun")),
            size_gb=int_of("data disk size-gb", el.get("size-gb")),
            path=attr(el, "path", "data disk"),
        )


@dataclass(frozen=True)
class Metadata:
    """kvmss's own state, kept in the domain's ``<metadata><kvmss:instance>``."""

    instance: str  # instance name
    address: str  # guest IPv4 address, e.g. "10.77.0.5"
    mac: str
    current: Generation
    previous: Generation | None = None
    data_disks: tuple[DataDiskRecord, ...] = ()

    def __post_init__(self) -> None:
        nonempty("metadata instance", self.instance)
        try:
            ipaddress.IPv4Address(self.address)
        except ValueError:
            raise ValueError(
                f"metadata address {self.address[:40]!r} is not an IPv4 address"
            ) from None
        check_mac("metadata mac", self.mac)
        luns = [d.lun for d in self.data_disks]
        if len(set(luns)) != len(luns):
            raise ValueError(f"metadata data_disks: each lun may appear once, got {luns}")

    def to_element(self) -> ET.Element:
        el = ET.Element(
            kvmss_tag("instance"), {"name": self.instance, "address": self.address, "mac": self.mac}
        )
        el.append(self.current.to_element("current"))
        if self.previous is not None:
            el.append(self.previous.to_element("previous"))
        for disk in self.data_disks:
            el.append(disk.to_element())
        return el

    @classmethod
    def from_element(cls, el: ET.Element) -> Metadata:
        if el.tag != kvmss_tag("instance"):
            raise ValueError(f"metadata element {el.tag!r} is not {kvmss_tag('instance')!r}")
        generations: dict[str, Generation] = {}
        for gen_el in el.findall(kvmss_tag("generation")):
            role = attr(gen_el, "role", "metadata generation")
            one_of("metadata generation role", role, ("current", "previous"))
            if role in generations:
                raise ValueError(f"metadata has more than one {role} generation")
            generations[role] = Generation.from_element(gen_el)
        if "current" not in generations:
            raise ValueError("metadata has no current generation")
        return cls(
            instance=attr(el, "name", "metadata"),
            address=attr(el, "address", "metadata"),
            mac=attr(el, "mac", "metadata"),
            current=generations["current"],
            previous=generations.get("previous"),
            data_disks=tuple(
                DataDiskRecord.from_element(d) for d in el.findall(kvmss_tag("data-disk"))
            ),
        )
