from __future__ import annotations

from pathlib import Path

import pytest

from hostagent.hypervisor.domaintype import (
    choose_domain_type,
    cpu_has_virtualization,
    kvm_device_usable,
    uri_driver,
)

INTEL = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) CPU
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep vmx ssse3 sse4_1 popcnt
bugs\t\t: spectre_v1

processor\t: 1
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep vmx ssse3 sse4_1 popcnt
"""
AMD = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 svm lm nx\n"
NO_VIRT = (
    "processor\t: 0\n"
    "model name\t: vmx svm lookalike in a model name\n"
    "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep hypervisor vmxnet svmx\n"
    "vmx flags\t: vnmi preemption_timer\n"
)


@pytest.fixture
def kvm_device(tmp_path: Path) -> str:
    """A file that opens read-write, standing in for a working /dev/kvm."""
    path = tmp_path / "kvm"
    path.write_bytes(b"")
    return str(path)


def _cpuinfo(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text", [INTEL, AMD], ids=["vmx", "svm"])
def test_kvm_when_device_opens_and_cpu_has_vmx_or_svm(
    tmp_path: Path, kvm_device: str, text: str
) -> None:
    cpuinfo = _cpuinfo(tmp_path, text)
    assert choose_domain_type("qemu:///system", kvm_device, cpuinfo) == "kvm"
    assert choose_domain_type("qemu+ssh://host/system", kvm_device, cpuinfo) == "kvm"


def test_qemu_when_flags_lack_vmx_and_svm(tmp_path: Path, kvm_device: str) -> None:
    # vmx/svm elsewhere than as a whole word on the flags line does not count
    cpuinfo = _cpuinfo(tmp_path, NO_VIRT)
    assert choose_domain_type("qemu:///system", kvm_device, cpuinfo) == "qemu"


def test_qemu_when_cpuinfo_is_missing(tmp_path: Path, kvm_device: str) -> None:
    assert choose_domain_type("qemu:///system", kvm_device, str(tmp_path / "absent")) == "qemu"


@pytest.mark.parametrize("device", ["absent", "a-directory"])
def test_qemu_when_kvm_device_does_not_open(tmp_path: Path, device: str) -> None:
    (tmp_path / "a-directory").mkdir()
    cpuinfo = _cpuinfo(tmp_path, INTEL)
    assert not kvm_device_usable(str(tmp_path / device))
    assert choose_domain_type("qemu:///system", str(tmp_path / device), cpuinfo) == "qemu"


@pytest.mark.parametrize("uri", ["test:///default", "test:///tmp/hosts.xml", "TEST:///default"])
def test_test_driver_uris_give_test(tmp_path: Path, kvm_device: str, uri: str) -> None:
    cpuinfo = _cpuinfo(tmp_path, INTEL)
    assert choose_domain_type(uri, kvm_device, cpuinfo) == "test"
    assert choose_domain_type(uri, str(tmp_path / "absent"), cpuinfo) == "test"


def test_uri_driver() -> None:
    assert uri_driver("qemu:///system") == "qemu"
    assert uri_driver("qemu+ssh://root@host/system") == "qemu"
    assert uri_driver("test:///default") == "test"


def test_this_host_without_vmx_or_svm_gets_qemu() -> None:
    if cpu_has_virtualization():
        pytest.skip("this host's CPU flags show vmx or svm")
    assert choose_domain_type("qemu:///system") == "qemu"
