"""Stopping a domain on libvirt's test:///default driver, on a FakeClock."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator

import libvirt
import pytest

from hostagent.hypervisor.virt import Hypervisor
from kvmss.base.clock import FakeClock
from tests.hostagent.domxml.domain_samples import firmware_domain


@pytest.fixture
def running() -> Iterator[tuple[Hypervisor, FakeClock, str]]:
    clock = FakeClock()
    hv = Hypervisor("test:///default", clock)
    name = "kvmss-test-" + secrets.token_hex(4)
    hv.define(firmware_domain(name=name, uuid=str(uuid.uuid4())))
    hv.start(name)
    try:
        yield hv, clock, name
    finally:
        hv.undefine(name)
        hv.close()


def test_stop_of_a_guest_that_powers_off_returns_true_at_once(
    running: tuple[Hypervisor, FakeClock, str],
) -> None:
    hv, clock, name = running
    assert hv.stop(name, timeout=30)
    assert not hv.is_running(name)
    assert clock.monotonic() == 0


def test_stop_forces_off_a_guest_that_ignores_acpi_after_the_timeout(
    running: tuple[Hypervisor, FakeClock, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hv, clock, name = running
    dom = hv.conn().lookupByName(name)
    monkeypatch.setattr(dom, "shutdown", lambda: 0)  # the guest ignores the ACPI request
    monkeypatch.setattr(hv, "_dom", lambda n: dom if n == name else None)
    assert not hv.stop(name, timeout=30)
    assert not hv.is_running(name)
    assert clock.monotonic() == pytest.approx(30)


def test_stop_of_a_domain_not_running_or_absent_is_true(
    running: tuple[Hypervisor, FakeClock, str],
) -> None:
    hv, _clock, name = running
    hv.conn().lookupByName(name).destroy()
    assert hv.stop(name, timeout=30)
    assert hv.stop("kvmss-test-absent", timeout=30)
    with pytest.raises(libvirt.libvirtError):
        hv.conn().lookupByName("kvmss-test-absent")
