"""Building the files of one OS disk generation: the overlay on the cached base
image, and the NoCloud seed whose new instance-id makes cloud-init run the
extensions again. Nothing here touches libvirt or a running guest."""

from __future__ import annotations

import errno
import logging
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hostagent.contract import instancespec
from hostagent.disks.imagecache import ImageCache, ImageRejected
from hostagent.disks.layout import Layout
from hostagent.domxml.metadata import Generation, ImageRecord
from hostagent.guest import extensions, seed, userdata
from hostagent.guest.reports import ReportStore
from hostagent.guest.tokens import GuestTokens
from hostagent.lifecycle.operations import OperationFailed
from hostagent.network.addresses import Subnet
from kvmss.base import qemuimg

log = logging.getLogger(__name__)


@contextmanager
def undone_if_failed(undo: Callable[[], None]) -> Iterator[None]:
    """Run ``undo`` when the block raises: an operation that could not build
    its generation leaves nothing behind. A rejected image fails it as
    ``Image<code>``."""
    try:
        yield
    except ImageRejected as e:
        undo()
        raise OperationFailed(f"Image{e.code}", str(e)) from None
    except BaseException:
        undo()
        raise


@dataclass(frozen=True)
class Network:
    subnet: Subnet
    guest_port: int


class GenerationBuilder:
    def __init__(
        self,
        layout: Layout,
        cache: ImageCache,
        tokens: GuestTokens,
        reports: ReportStore,
        network: Network,
    ) -> None:
        self.layout = layout
        self.cache = cache
        self.tokens = tokens
        self.reports = reports
        self.network = network

    def fetch(self, image: instancespec.ImageSpec) -> tuple[Path, Path | None, Path | None]:
        """Base image, kernel and initrd in the cache (downloaded and verified)."""
        base = self.cache.fetch(image.url, image.sha256, "qcow2")
        kernel = initrd = None
        if image.kernel is not None:
            kernel = self.cache.fetch(image.kernel.url, image.kernel.sha256, "raw")
        if image.initrd is not None:
            initrd = self.cache.fetch(image.initrd.url, image.initrd.sha256, "raw")
        return base, kernel, initrd

    def report_url(self, name: str) -> str:
        gw = self.network.subnet.gateway
        return f"http://{gw}:{self.network.guest_port}/v1/guest/instances/{name}"

    def build(
        self,
        name: str,
        number: int,
        image: instancespec.ImageSpec,
        spec: instancespec.InstanceSpec,
        address: str,
        mac: str,
    ) -> Generation:
        """Create os-<number>.qcow2 and seed-<number>.iso; replaces leftovers of
        a crashed attempt at the same generation (never referenced by a domain)."""
        base, kernel, initrd = self.fetch(image)
        self.layout.make_instance_dir(name)
        os_disk = self.layout.os_disk(name, number)
        seed_iso = self.layout.seed(name, number)
        self.remove(name, number)
        instance_id = f"i-{name}-g{number}-{secrets.token_hex(3)}"
        ordered = extensions.order(spec.extensions)
        content = self._seed_content(name, instance_id, spec, ordered, address, mac)
        try:
            qemuimg.create_overlay(os_disk, base)
            seed.write_seed_iso(seed_iso, content)
        except (OSError, qemuimg.QemuImgError) as e:
            self.remove(name, number)
            raise self._not_written(name, number, e) from None
        except BaseException:
            self.remove(name, number)
            raise
        self.reports.expect(name, instance_id, [e.name for e in ordered])
        return Generation(
            number=number,
            instance_id=instance_id,
            os_disk=str(os_disk),
            seed=str(seed_iso),
            image=ImageRecord(reference=image.reference, sha256=image.sha256),
            kernel=str(kernel) if kernel else None,
            initrd=str(initrd) if initrd else None,
            cmdline=image.cmdline or None,
        )

    def _seed_content(
        self,
        name: str,
        instance_id: str,
        spec: instancespec.InstanceSpec,
        ordered: list[instancespec.Extension],
        address: str,
        mac: str,
    ) -> seed.SeedContent:
        subnet = self.network.subnet
        return seed.SeedContent(
            meta_data=seed.meta_data(instance_id, spec.osProfile.computerName),
            network_config=seed.network_config(
                mac, f"{address}/{subnet.prefixlen}", subnet.gateway, [subnet.gateway]
            ),
            user_data=userdata.user_data(
                admin_username=spec.osProfile.adminUsername,
                ssh_public_keys=spec.osProfile.sshPublicKeys,
                extensions_script=extensions.user_data_script(
                    instance=name,
                    instance_id=instance_id,
                    extensions=ordered,
                    report_url=self.report_url(name),
                    token=self.tokens.token(name),
                    custom_data=spec.osProfile.customData,
                ),
            ),
        )

    def _not_written(
        self, name: str, number: int, e: OSError | qemuimg.QemuImgError
    ) -> OperationFailed:
        """The error of a generation whose files could not be written: NoSpace
        when the disk is full, GenerationFailed otherwise."""
        where = self.layout.instance_dir(name)
        what = f"instance {name}: cannot write OS disk generation {number} in {where}"
        if isinstance(e, OSError):
            full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            detail = e.strerror or type(e).__name__
        else:
            full = os.strerror(errno.ENOSPC) in e.stderr or os.strerror(errno.EDQUOT) in e.stderr
            detail = e.stderr.strip().splitlines()[-1] if e.stderr.strip() else str(e)
        if full:
            st = os.statvfs(where)
            free = st.f_bavail * st.f_frsize
            return OperationFailed("NoSpace", f"{what}: no space left ({free} bytes free)")
        return OperationFailed("GenerationFailed", f"{what}: {detail}")

    def remove(self, name: str, number: int) -> None:
        """Delete a generation's files (idempotent)."""
        for p in (self.layout.os_disk(name, number), self.layout.seed(name, number)):
            if p.exists():
                log.info("removing %s", p.name)
                p.unlink()

    def files_on_disk(self, name: str) -> set[int]:
        """Generation numbers that have an OS disk or seed file on disk."""
        d = self.layout.instance_dir(name)
        out = set()
        for p in list(d.glob("os-*.qcow2")) + list(d.glob("seed-*.iso")):
            stem = p.name.split(".", 1)[0].split("-", 1)[1]
            if stem.isdigit():
                out.add(int(stem))
        return out
