"""The instance view the API answers with: what libvirt, the stored spec,
the guests' reports and the host's probe say, and the health verdict."""

from __future__ import annotations

from hostagent.contract import views
from hostagent.domxml.domain import Domain
from hostagent.domxml.metadata import Generation
from hostagent.guest.reports import ReportStore
from hostagent.health.probes import Prober
from hostagent.health.verdict import verdict
from hostagent.hypervisor.virt import Hypervisor
from hostagent.lifecycle.records import InstanceRecords, meta


class Views:
    def __init__(
        self, hv: Hypervisor, records: InstanceRecords, reports: ReportStore, prober: Prober
    ) -> None:
        self.hv = hv
        self.records = records
        self.reports = reports
        self.prober = prober

    def view(self, name: str) -> views.InstanceView:
        return self._view(self.records.domain(name))

    def list(self) -> list[views.InstanceView]:
        return [self._view(d) for d in sorted(self.hv.owned(), key=lambda d: d.name)]

    def _view(self, dom: Domain) -> views.InstanceView:
        m = meta(dom)
        name = dom.name
        power = self.hv.state(name)
        spec = self.records.spec(name)
        exts = self.reports.extensions(name, m.current.instance_id)
        probe = spec.healthProbe if spec else None
        app_expected = bool(spec) and any(
            e.type == "ApplicationHealthLinux" for e in (spec.extensions if spec else [])
        )
        app = self.reports.application_health(name, m.current.instance_id)
        health = verdict(
            power_state=power,
            extensions=exts,
            probe=probe,
            probe_healthy=self.prober.healthy(name) if probe else None,
            app_health_expected=app_expected,
            app_health=app,
        )
        return views.InstanceView(
            name=name,
            powerState=power,
            address=m.address,
            current=_generation_view(m.current),
            previous=_generation_view(m.previous) if m.previous else None,
            dataDisks=[
                views.DataDiskView(lun=d.lun, diskSizeGB=d.size_gb, path=d.path)
                for d in m.data_disks
            ],
            extensions=exts,
            probe=self.prober.status(name) if probe else None,
            applicationHealth=app,
            health=health,
        )


def _generation_view(g: Generation) -> views.GenerationView:
    return views.GenerationView(
        generation=g.number,
        instanceId=g.instance_id,
        image=g.image.reference,
        imageSha256=g.image.sha256,
        osDisk=g.os_disk,
    )
