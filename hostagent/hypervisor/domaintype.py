"""Which libvirt domain type this host runs its guests with: kvm, qemu (TCG) or test.

KVM is used only when it can work: ``/dev/kvm`` opens read-write AND the CPU
flags show hardware virtualization (``vmx`` or ``svm``). Nested clouds and CI
machines often have a ``/dev/kvm`` that opens while guests hang for want of
the CPU extension; they get TCG (``qemu``).
"""

from __future__ import annotations

import os
from typing import Literal

DomainType = Literal["kvm", "qemu", "test"]

KVM_DEVICE = "/dev/kvm"
CPUINFO = "/proc/cpuinfo"
VIRTUALIZATION_FLAGS = frozenset({"vmx", "svm"})


def uri_driver(uri: str) -> str:
    """The driver part of a libvirt URI: "test" for test:///default, "qemu" for qemu+ssh://..."""
    return uri.partition(":")[0].partition("+")[0].lower()


def kvm_device_usable(kvm_device: str = KVM_DEVICE) -> bool:
    """True when ``kvm_device`` opens read-write."""
    try:
        fd = os.open(kvm_device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def cpu_has_virtualization(cpuinfo: str = CPUINFO) -> bool:
    """True when a ``flags`` line of ``cpuinfo`` lists vmx or svm."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "flags" and VIRTUALIZATION_FLAGS & set(value.split()):
                    return True
    except OSError:
        return False
    return False


def choose_domain_type(
    uri: str, kvm_device: str = KVM_DEVICE, cpuinfo: str = CPUINFO
) -> DomainType:
    """Return "test" for test:/// URIs, "kvm" when KVM is usable, otherwise "qemu" (TCG)."""
    if uri_driver(uri) == "test":
        return "test"
    if kvm_device_usable(kvm_device) and cpu_has_virtualization(cpuinfo):
        return "kvm"
    return "qemu"
