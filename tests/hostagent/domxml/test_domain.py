from __future__ import annotations

import secrets
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import libvirt
import pytest

from hostagent.domxml.devices import Disk, Interface, OsBoot
from hostagent.domxml.domain import Domain
from hostagent.domxml.metadata import KVMSS_NS, DataDiskRecord, Generation, Metadata
from tests.hostagent.domxml.domain_samples import (
    IMAGE_V1,
    SAMPLES,
    assert_valid_domain_xml,
    direct_kernel_domain,
    firmware_domain,
    golden_text,
)


def _golden(name: str) -> str:
    return golden_text(name, SAMPLES[name]().to_xml())


# ---- golden files -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_to_xml_matches_golden_file(name: str) -> None:
    assert SAMPLES[name]().to_xml() == _golden(name)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_golden_file_parses_to_the_sample(name: str) -> None:
    assert Domain.from_xml(_golden(name)) == SAMPLES[name]()


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_golden_file_passes_virt_xml_validate(name: str, tmp_path: Path) -> None:
    assert_valid_domain_xml(_golden(name), tmp_path)


def test_golden_files_differ_where_the_samples_do() -> None:
    direct = ET.fromstring(_golden("domain-direct-kernel.xml"))
    firmware = ET.fromstring(_golden("domain-firmware.xml"))
    # direct kernel boot: kernel, no <boot>; firmware: <boot dev='hd'/>, no kernel
    assert direct.find("os/kernel") is not None and direct.find("os/boot") is None
    assert firmware.find("os/kernel") is None
    assert firmware.find("os/boot") is not None
    assert firmware.find("os/boot").get("dev") == "hd"  # type: ignore[union-attr]
    gens = direct.findall(f"metadata/{{{KVMSS_NS}}}instance/{{{KVMSS_NS}}}generation")
    assert [g.get("role") for g in gens] == ["current", "previous"]
    gens = firmware.findall(f"metadata/{{{KVMSS_NS}}}instance/{{{KVMSS_NS}}}generation")
    assert [g.get("role") for g in gens] == ["current"]
    assert firmware.find("cpu").get("mode") == "host-passthrough"  # type: ignore[union-attr]
    assert direct.find("cpu") is None


def test_fixed_parts_are_always_emitted() -> None:
    el = ET.fromstring(direct_kernel_domain().to_xml())
    assert el.find("features/acpi") is not None and el.find("features/apic") is not None
    assert el.find("clock").get("offset") == "utc"  # type: ignore[union-attr]
    assert el.find("devices/console").get("type") == "pty"  # type: ignore[union-attr]
    assert el.find("devices/graphics") is None
    log = el.find("devices/serial[@type='pty']/log")
    assert log is not None
    assert log.attrib == {"file": "/var/lib/kvmss/instances/web-0/console.log", "append": "on"}


# ---- round trips -----------------------------------------------------------------


def _variants() -> list[object]:
    base = direct_kernel_domain()
    return [
        pytest.param(base, id="direct-kernel"),
        pytest.param(firmware_domain(), id="firmware"),
        pytest.param(replace(base, type="test"), id="test-driver"),
        pytest.param(replace(base, metadata=None), id="no-metadata"),
        pytest.param(replace(base, console_log=None), id="no-console-log"),
        pytest.param(replace(base, cpu_mode="host-model", type="kvm"), id="host-model"),
        pytest.param(
            replace(base, on_poweroff="preserve", on_reboot="destroy", on_crash="coredump-restart"),
            id="lifecycle",
        ),
        pytest.param(replace(base, os=OsBoot(machine="q35", kernel="/boot/vmlinuz")), id="q35"),
        pytest.param(replace(base, interfaces=()), id="no-interface"),
        pytest.param(
            replace(
                base,
                disks=(Disk(path="/d/a.raw", target="vdz", bus="virtio", format="raw"),),
                interfaces=(
                    Interface(bridge="br0", mac="52:54:00:00:00:01", model="e1000"),
                    Interface(bridge="br1", mac="52:54:00:00:00:02"),
                ),
            ),
            id="raw-disk-two-nics",
        ),
    ]


@pytest.mark.parametrize("domain", _variants())
def test_from_xml_of_to_xml_is_identity(domain: Domain, tmp_path: Path) -> None:
    xml = domain.to_xml()
    assert Domain.from_xml(xml) == domain
    assert_valid_domain_xml(xml, tmp_path)


def test_cmdline_with_xml_special_characters_round_trips(tmp_path: Path) -> None:
    cmd = "console=ttyS0 x=\"a b\" y='<&>'"
    base = direct_kernel_domain()
    assert base.metadata is not None
    md = replace(base.metadata, current=replace(base.metadata.current, cmdline=cmd))
    domain = replace(base, os=replace(base.os, cmdline=cmd), metadata=md)
    xml = domain.to_xml()
    assert_valid_domain_xml(xml, tmp_path)
    parsed = Domain.from_xml(xml)
    assert parsed.os.cmdline == cmd
    assert parsed.metadata is not None and parsed.metadata.current.cmdline == cmd


# ---- what libvirt hands back --------------------------------------------------------


def _canonical_machine(conn: libvirt.virConnect, domain: Domain) -> str:
    caps = conn.getDomainCapabilities(None, domain.os.arch, domain.os.machine, domain.type)
    machine = ET.fromstring(caps).findtext("machine")
    assert machine
    return machine


@pytest.mark.parametrize("uri", ["test:///default", "qemu:///system"])
@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_libvirt_read_back_parses_to_the_original(uri: str, sample: str, scratch: Path) -> None:
    """Define (never start) each golden domain, read XMLDesc(INACTIVE) back, parse it.

    libvirt rewrites the document (KiB memory, controllers, addresses,
    re-serialised metadata namespace...); the model must come back equal,
    except that the qemu driver pins "pc" to its canonical versioned machine.
    """
    name = "kvmss-test-" + secrets.token_hex(4)
    original = SAMPLES[sample](str(scratch), name, str(uuid.uuid4()))
    conn = libvirt.open(uri)
    try:
        expected = original
        if uri.startswith("qemu:"):
            try:
                machine = _canonical_machine(conn, original)
            except libvirt.libvirtError as e:
                pytest.skip(f"this host's libvirt cannot define {original.type} domains: {e}")
            assert machine != original.os.machine  # "pc" becomes e.g. "pc-i440fx-7.2"
            expected = replace(original, os=replace(original.os, machine=machine))
        dom = conn.defineXML(original.to_xml())
        try:
            assert not dom.isActive()
            back = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        finally:
            dom.undefine()
        with pytest.raises(libvirt.libvirtError):
            conn.lookupByName(name)
    finally:
        conn.close()

    assert back != original.to_xml()  # libvirt really rewrote it
    assert "KiB" in back and "MiB" not in back
    parsed = Domain.from_xml(back)
    assert parsed == expected
    assert parsed.metadata == original.metadata
    assert_valid_domain_xml(back, scratch)
    # and what we parsed can be written back out and validated again
    assert_valid_domain_xml(parsed.to_xml(), scratch)


# ---- parsing details ------------------------------------------------------------


def _with_memory(unit: str | None, value: str) -> str:
    el = direct_kernel_domain().to_element()
    mem = el.find("memory")
    assert mem is not None
    mem.attrib.clear()
    if unit is not None:
        mem.set("unit", unit)
    mem.text = value
    return ET.tostring(el, encoding="unicode")


@pytest.mark.parametrize(
    ("unit", "value", "mib"),
    [
        (None, "262144", 256),
        ("KiB", "524288", 512),
        ("k", "1024", 1),
        ("MiB", "300", 300),
        ("M", "64", 64),
        ("GiB", "2", 2048),
        ("bytes", str(3 * 2**20), 3),
    ],
)
def test_memory_units_are_converted_to_mib(unit: str | None, value: str, mib: int) -> None:
    assert Domain.from_xml(_with_memory(unit, value)).memory_mib == mib


def test_memory_that_is_not_whole_mib_is_refused() -> None:
    with pytest.raises(ValueError, match="memory"):
        Domain.from_xml(_with_memory("KiB", "1000"))
    with pytest.raises(ValueError, match="memory unit"):
        Domain.from_xml(_with_memory("parsecs", "1"))


def _rewrap_metadata(original: Domain, build: Callable[[ET.Element], ET.Element]) -> str:
    """The domain's XML with <metadata> replaced by build(<kvmss:instance>)."""
    assert original.metadata is not None
    el = original.to_element()
    meta = el.find("metadata")
    assert meta is not None
    meta.clear()
    meta.append(build(original.metadata.to_element()))
    text = ET.tostring(el, encoding="unicode")
    return text


def test_metadata_is_found_by_namespace_not_prefix() -> None:
    original = direct_kernel_domain()
    ours = original.to_xml()
    assert 'xmlns:kvmss="' + KVMSS_NS + '"' in ours

    other_prefix = ours.replace("kvmss:", "vendor0:").replace("xmlns:kvmss=", "xmlns:vendor0=")
    assert "kvmss:" not in other_prefix
    assert Domain.from_xml(other_prefix) == original

    # the namespace declared on <instance> itself as the default namespace
    default_ns = (
        ours.replace(' xmlns:kvmss="' + KVMSS_NS + '"', "")
        .replace("<kvmss:instance ", '<instance xmlns="' + KVMSS_NS + '" ')
        .replace("<kvmss:", "<")
        .replace("</kvmss:", "</")
    )
    assert "kvmss:" not in default_ns
    assert Domain.from_xml(default_ns) == original


def test_metadata_of_other_namespaces_is_ignored() -> None:
    original = direct_kernel_domain()

    def with_neighbours(inst: ET.Element) -> ET.Element:
        wrapper = ET.Element("metadata")
        ET.SubElement(wrapper, "{http://example.org/other}instance", {"name": "x"})
        wrapper.append(inst)
        return wrapper

    el = original.to_element()
    meta = el.find("metadata")
    assert meta is not None and original.metadata is not None
    el.remove(meta)
    el.insert(2, with_neighbours(original.metadata.to_element()))
    assert Domain.from_xml(ET.tostring(el, encoding="unicode")) == original


def test_domain_without_our_metadata_parses_with_metadata_none() -> None:
    original = firmware_domain()
    el = original.to_element()
    meta = el.find("metadata")
    assert meta is not None
    meta.clear()
    ET.SubElement(meta, "{http://example.org/other}thing")
    assert Domain.from_xml(ET.tostring(el, encoding="unicode")) == replace(original, metadata=None)


def test_custom_cpu_libvirt_fills_in_reads_as_no_choice() -> None:
    el = direct_kernel_domain().to_element()
    cpu = ET.Element("cpu", {"mode": "custom", "match": "exact", "check": "none"})
    ET.SubElement(cpu, "model", {"fallback": "forbid"}).text = "qemu64"
    el.insert(6, cpu)
    assert Domain.from_xml(ET.tostring(el, encoding="unicode")).cpu_mode is None


def test_serial_without_log_means_no_console_log() -> None:
    domain = replace(direct_kernel_domain(), console_log=None)
    el = ET.fromstring(domain.to_xml())
    serial = el.find("devices/serial")
    assert serial is not None and serial.find("log") is None
    assert Domain.from_xml(domain.to_xml()).console_log is None


# ---- invalid values ------------------------------------------------------------------


def _set(xml: str, path: str, attr: str, value: str) -> str:
    el = ET.fromstring(xml)
    target = el.find(path)
    assert target is not None, path
    target.set(attr, value)
    return ET.tostring(el, encoding="unicode")


@pytest.mark.parametrize(
    ("path", "attr", "value", "field"),
    [
        ("devices/disk/target", "bus", "ide", "bus 'ide'"),
        ("devices/disk/target", "dev", "sda", "target"),
        ("devices/disk", "device", "floppy", "device 'floppy'"),
        ("devices/disk", "type", "block", "type 'block'"),
        ("devices/disk/driver", "type", "vmdk", "format 'vmdk'"),
        ("devices/disk/driver", "cache", "sometimes", "cache 'sometimes'"),
        ("devices/interface", "type", "network", "interface type 'network'"),
        ("devices/interface/model", "type", "ne2k_pci", "model 'ne2k_pci'"),
        ("devices/interface/mac", "address", "52:54:00:4B:1D:05", "mac"),
        ("os/type", "arch", "armv7l", "os arch"),
        (".", "type", "xen", "domain type 'xen'"),
        ("cpu", "mode", "host-pretend", "cpu_mode"),
    ],
)
def test_unsupported_values_raise_value_error_naming_the_field(
    path: str, attr: str, value: str, field: str
) -> None:
    bad = _set(firmware_domain().to_xml(), path, attr, value)
    with pytest.raises(ValueError, match=field):
        Domain.from_xml(bad)


def test_unsupported_values_are_refused_at_construction_too() -> None:
    with pytest.raises(ValueError, match="bus 'scsi'"):
        Disk(path="/x.qcow2", target="sda", bus="scsi")
    with pytest.raises(ValueError, match="target"):
        Disk(path="/x.qcow2", target="vda", bus="sata")
    with pytest.raises(ValueError, match="path"):
        Disk(path="relative.qcow2", target="vda", bus="virtio")
    with pytest.raises(ValueError, match="serial"):
        Disk(path="/x.qcow2", target="vda", bus="virtio", serial="has/slash")
    with pytest.raises(ValueError, match="bridge"):
        Interface(bridge="a-bridge-name-too-long", mac="52:54:00:00:00:01")
    with pytest.raises(ValueError, match="uuid"):
        replace(direct_kernel_domain(), uuid="not-a-uuid")
    with pytest.raises(ValueError, match="uuid"):
        replace(direct_kernel_domain(), uuid="6F1C1A52-3C1E-4D8E-9A51-0C4B2F1E7A10")
    with pytest.raises(ValueError, match="each target may appear once"):
        base = direct_kernel_domain()
        replace(base, disks=(base.disks[0], base.disks[0]))
    with pytest.raises(ValueError, match="vcpus"):
        replace(direct_kernel_domain(), vcpus=0)
    with pytest.raises(ValueError, match="os initrd needs a kernel"):
        OsBoot(initrd="/boot/initrd")
    with pytest.raises(ValueError, match="cmdline must not be empty"):
        OsBoot(kernel="/boot/vmlinuz", cmdline="")
    with pytest.raises(ValueError, match="on_crash"):
        replace(direct_kernel_domain(), on_crash="explode")


def test_invalid_metadata_is_refused() -> None:
    gen = Generation(1, "i-1", "/os.qcow2", "/seed.iso", IMAGE_V1)
    with pytest.raises(ValueError, match="generation number"):
        replace(gen, number=0)
    with pytest.raises(ValueError, match="generation seed"):
        replace(gen, seed="seed.iso")
    with pytest.raises(ValueError, match="sha256"):
        replace(IMAGE_V1, sha256="abc")
    with pytest.raises(ValueError, match="address"):
        Metadata("i", "10.77.0.300", "52:54:00:00:00:01", gen)
    with pytest.raises(ValueError, match="metadata mac"):
        Metadata("i", "10.77.0.3", "52-54-00-00-00-01", gen)
    with pytest.raises(ValueError, match="each lun may appear once"):
        Metadata(
            "i",
            "10.77.0.3",
            "52:54:00:00:00:01",
            gen,
            data_disks=(DataDiskRecord(0, 1, "/a"), DataDiskRecord(0, 2, "/b")),
        )
    with pytest.raises(ValueError, match="lun 16 is out of range"):
        DataDiskRecord(16, 1, "/a")


def test_metadata_without_current_generation_is_refused() -> None:
    original = direct_kernel_domain()

    def drop_current(inst: ET.Element) -> ET.Element:
        for gen in inst.findall(f"{{{KVMSS_NS}}}generation"):
            if gen.get("role") == "current":
                inst.remove(gen)
        return inst

    with pytest.raises(ValueError, match="no current generation"):
        Domain.from_xml(_rewrap_metadata(original, drop_current))


def test_metadata_with_a_bad_number_names_it() -> None:
    original = direct_kernel_domain()

    def bad_number(inst: ET.Element) -> ET.Element:
        gen = inst.find(f"{{{KVMSS_NS}}}generation")
        assert gen is not None
        gen.set("number", "two")
        return inst

    with pytest.raises(ValueError, match="generation current number 'two'"):
        Domain.from_xml(_rewrap_metadata(original, bad_number))


def test_malformed_xml_and_other_roots_raise_value_error() -> None:
    with pytest.raises(ValueError, match="not well formed"):
        Domain.from_xml("<domain type='qemu'><name>x</name>")
    with pytest.raises(ValueError, match="<network>"):
        Domain.from_xml("<network><name>default</name></network>")
    with pytest.raises(ValueError, match="uuid"):
        Domain.from_xml("<domain type='qemu'><name>x</name></domain>")
