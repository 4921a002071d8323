"""The image catalog: published base images, by publisher/offer/sku/version.

Publishing streams the qcow2 into ``<blob_dir>/<sha256>.qcow2`` through a
``.part`` file (hashing while it streams), and inspects it with qemu-img
before anyone can see it: it must be a qcow2 with no backing file and no
external data file, and ``qemu-img check`` must pass. Only then is the file
renamed into place (read-only) and the version recorded in the store. On any
error nothing is left behind: no ``.part`` file, no blob this call created,
no row. Kernels and initrds for direct kernel boot are raw files stored the
same way, as ``<sha256>.kernel`` and ``<sha256>.initrd``.

Identical bytes published twice (under two versions) share one blob.

Versions are dotted integers (:mod:`controller.model.versions`); ``latest`` names
the newest published version of a sku.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, TypedDict

from controller.base.errors import ControllerError
from controller.model.versions import newest, parse_version, sort_newest_first
from controller.store.facade import AlreadyExists, ImageRecord, ImageRef, Store
from hostagent.contract.names import IMAGE_PART_RE
from kvmss.base import atomicfile, qemuimg
from kvmss.base.clock import Clock, iso8601

log = logging.getLogger(__name__)

LATEST: Final = "latest"
CHUNK: Final = 1 << 20
DEFAULT_MAX_BYTES: Final = 64 << 30
CMDLINE_MAX: Final = 1024  # as the agent's instancespec.ImageSpec.cmdline

# HTTP status for each error code (400 for any code not listed).
_STATUS: Final = {
    "ImageNotFound": 404,
    "AlreadyExists": 409,
    "TooLarge": 413,
    "Sha256Mismatch": 422,
}


class CatalogError(ControllerError):
    """A publish or a lookup was refused.

    ``code`` is one of InvalidParameter, InvalidVersion, AlreadyExists,
    TooLarge, UploadFailed, Sha256Mismatch, NotQcow2, BackingFile, DataFile,
    CheckFailed, ImageNotFound; ``status`` the HTTP status the API answers with.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(_STATUS.get(code, 400), code, message)


class PublishOptions(TypedDict, total=False):
    """What a publish may carry besides the qcow2 (:meth:`Catalog.publish`)."""

    kernel: Path | None
    initrd: Path | None
    cmdline: str | None
    sha256: str | None


@dataclass(frozen=True)
class SkuEntry:
    """One sku of the catalog and its versions, newest first."""

    publisher: str
    offer: str
    sku: str
    versions: tuple[str, ...]

    @property
    def latest(self) -> str:
        return self.versions[0]


@dataclass(frozen=True)
class _Blob:
    """A streamed file: its ``.part`` path, sha256 and size."""

    part: Path
    sha256: str
    size: int


def _check_part(field: str, value: str) -> None:
    if not isinstance(value, str) or not IMAGE_PART_RE.fullmatch(value):
        raise CatalogError(
            "InvalidParameter",
            f"{field}: {str(value)[:80]!r} is invalid: use 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit",
        )


def _check_version(version: str) -> None:
    try:
        parse_version(version)
    except ValueError as e:
        raise CatalogError("InvalidVersion", f"version: {e}") from None


class Catalog:
    def __init__(
        self, store: Store, blob_dir: Path, clock: Clock, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes: must be positive, got {max_bytes}")
        self.store = store
        self.blob_dir = Path(blob_dir).absolute()
        self.clock = clock
        self.max_bytes = max_bytes
        # Serialises "make blobs visible + record the row" (and undoing it),
        # so a failed publish never removes a blob another one just recorded.
        self._lock = threading.Lock()
        self.blob_dir.mkdir(parents=True, exist_ok=True)

    # --- publishing --------------------------------------------------------------

    def publish(
        self,
        publisher: str,
        offer: str,
        sku: str,
        version: str,
        source: Path | BinaryIO,
        *,
        kernel: Path | None = None,
        initrd: Path | None = None,
        cmdline: str | None = None,
        sha256: str | None = None,
    ) -> ImageRecord:
        """Publish ``source`` (a qcow2 file or stream) as that version.

        ``sha256``, the publisher's digest of the qcow2, is compared with what
        arrived: ``qemu-img check`` cannot see a loss of less than one cluster
        at the end of the file (a dropped connection), the digest can.
        Raises :class:`CatalogError`; on error nothing of this call is left.
        """
        if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise CatalogError("InvalidParameter", "sha256: must be 64 lowercase hex digits")
        for field, value in (("publisher", publisher), ("offer", offer), ("sku", sku)):
            _check_part(field, value)
        _check_version(version)
        ref = ImageRef(publisher, offer, sku, version)
        self._check_boot(kernel, initrd, cmdline)
        if self.store.images.get(publisher, offer, sku, version) is not None:
            raise CatalogError("AlreadyExists", f"image {ref}: this version is already published")

        parts: list[Path] = []
        try:
            kblob = self._stream_file(kernel, "kernel", parts) if kernel else None
            iblob = self._stream_file(initrd, "initrd", parts) if initrd else None
            if isinstance(source, Path):
                qblob = self._stream_file(source, "source", parts)
            else:
                qblob = self._stream(source, "source", parts)
            if sha256 is not None and qblob.sha256 != sha256:
                raise CatalogError(
                    "Sha256Mismatch",
                    f"image {ref}: the upload's sha256 is {qblob.sha256}, not the {sha256}"
                    f" given ({qblob.size} bytes arrived; was the upload cut short?)",
                )
            virtual_size = self._inspect(qblob.part, ref)
            rec = self._record(ref, qblob, virtual_size, kblob, iblob, cmdline)
        except AlreadyExists:
            raise CatalogError(
                "AlreadyExists", f"image {ref}: this version is already published"
            ) from None
        finally:
            for part in parts:
                part.unlink(missing_ok=True)
        log.info("published image %s: sha256 %s, %d bytes", ref, rec.sha256, rec.size_bytes)
        return rec

    def _record(
        self,
        ref: ImageRef,
        qblob: _Blob,
        virtual_size: int,
        kblob: _Blob | None,
        iblob: _Blob | None,
        cmdline: str | None,
    ) -> ImageRecord:
        """Make the blobs visible and record the version, or undo the blobs
        this call placed (a failed publish never removes another's blob)."""
        with self._lock:
            created: list[Path] = []
            try:
                rec = ImageRecord(
                    publisher=ref.publisher,
                    offer=ref.offer,
                    sku=ref.sku,
                    version=ref.version,
                    sha256=qblob.sha256,
                    size_bytes=qblob.size,
                    virtual_size=virtual_size,
                    path=self._place(qblob, "qcow2", created),
                    published_at=self.clock.now(),
                    kernel_path=self._place(kblob, "kernel", created) if kblob else None,
                    kernel_sha256=kblob.sha256 if kblob else None,
                    initrd_path=self._place(iblob, "initrd", created) if iblob else None,
                    initrd_sha256=iblob.sha256 if iblob else None,
                    cmdline=cmdline,
                )
                self.store.images.add(rec)
            except BaseException:
                for path in created:
                    path.unlink(missing_ok=True)
                raise
        return rec

    def _check_boot(self, kernel: Path | None, initrd: Path | None, cmdline: str | None) -> None:
        if initrd is not None and kernel is None:
            raise CatalogError("InvalidParameter", "initrd: needs a kernel")
        if cmdline is not None:
            if kernel is None:
                raise CatalogError("InvalidParameter", "cmdline: needs a kernel")
            if len(cmdline) > CMDLINE_MAX:
                raise CatalogError(
                    "InvalidParameter", f"cmdline: must be at most {CMDLINE_MAX} characters"
                )
            if not cmdline.isprintable():
                # What the agent refuses too: control characters break or
                # change the domain XML, so no instance could use the image.
                raise CatalogError(
                    "InvalidParameter", "cmdline: must be one line of printable characters"
                )

    def _stream_file(self, path: Path, field: str, parts: list[Path]) -> _Blob:
        if not path.is_file():
            raise CatalogError("InvalidParameter", f"{field}: {path} is not a regular file")
        try:
            f = path.open("rb")
        except OSError as e:
            raise CatalogError(
                "InvalidParameter", f"{field}: cannot read {path}: {e.strerror}"
            ) from None
        with f:
            blob = self._stream(f, field, parts)
        if blob.size == 0:
            raise CatalogError("InvalidParameter", f"{field}: {path} is empty")
        return blob

    def _stream(self, src: BinaryIO, field: str, parts: list[Path]) -> _Blob:
        """Copy ``src`` into a new ``.part`` file in the blob directory (added
        to ``parts`` at once, so the caller always removes it)."""
        fd, name = tempfile.mkstemp(dir=self.blob_dir, prefix=".upload-", suffix=".part")
        part = Path(name)
        parts.append(part)
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            while True:
                try:
                    chunk = src.read(CHUNK)
                except OSError as e:
                    raise CatalogError(
                        "UploadFailed", f"{field}: reading failed: {e.strerror or e}"
                    ) from None
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_bytes:
                    raise CatalogError(
                        "TooLarge", f"{field}: more than the limit of {self.max_bytes} bytes"
                    )
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        return _Blob(part=part, sha256=digest.hexdigest(), size=size)

    def _inspect(self, part: Path, ref: ImageRef) -> int:
        """Refuse anything but a sound standalone qcow2; its virtual size."""
        try:
            info = qemuimg.info(part, "qcow2")
        except qemuimg.QemuImgError as e:
            last = e.stderr.strip().splitlines()[-1:] or [e.reason or f"exit code {e.returncode}"]
            why = last[0].replace(str(part), "<upload>")
            raise CatalogError("NotQcow2", f"image {ref}: not a qcow2 image: {why}") from None
        if info.format != "qcow2":
            raise CatalogError("NotQcow2", f"image {ref}: not a qcow2 image: {info.format}")
        if info.backing_file is not None:
            raise CatalogError(
                "BackingFile",
                f"image {ref}: has its own backing file ({info.backing_file[:200]!r});"
                " publish a standalone image (qemu-img convert -O qcow2)",
            )
        if info.data_file is not None:
            raise CatalogError(
                "DataFile",
                f"image {ref}: has an external data file ({info.data_file[:200]!r});"
                " publish a standalone image (qemu-img convert -O qcow2)",
            )
        if info.corrupt:
            raise CatalogError("CheckFailed", f"image {ref}: qcow2 header marks it corrupt")
        try:
            res = qemuimg.check(part, "qcow2")
        except qemuimg.QemuImgError as e:
            why = (e.reason or f"exit code {e.returncode}").replace(str(part), "<upload>")
            raise CatalogError(
                "CheckFailed", f"image {ref}: qemu-img check could not run: {why}"
            ) from None
        if not res.ok:
            raise CatalogError("CheckFailed", f"image {ref}: qemu-img check: {res.reason()}")
        return info.virtual_size

    def _place(self, blob: _Blob, suffix: str, created: list[Path]) -> Path:
        """Make ``blob`` visible as ``<sha256>.<suffix>``, read-only. A file of
        that name already holds the same bytes; only new files go in ``created``."""
        dest = self.blob_dir / f"{blob.sha256}.{suffix}"
        if dest.exists():
            return dest
        os.chmod(blob.part, 0o444)
        os.replace(blob.part, dest)
        created.append(dest)
        atomicfile.fsync_dir(self.blob_dir)
        return dest

    # --- lookups -------------------------------------------------------------------

    def resolve(self, publisher: str, offer: str, sku: str, version: str) -> ImageRecord:
        """The record of that version, or of the newest one for ``latest``."""
        ref = ImageRef(publisher, offer, sku, version)
        if version.lower() == LATEST:
            recs = {r.version: r for r in self.store.images.matching(publisher, offer, sku)}
            best = newest(recs)
            if best is None:
                raise CatalogError(
                    "ImageNotFound",
                    f"image {ref}: no version of {publisher}/{offer}/{sku} is published",
                )
            return recs[best]
        rec = self.store.images.get(publisher, offer, sku, version)
        if rec is None:
            raise CatalogError("ImageNotFound", f"image {ref}: not found")
        return rec

    def versions(self, publisher: str, offer: str, sku: str) -> list[ImageRecord]:
        """Every published version of the sku, newest first."""
        recs = {r.version: r for r in self.store.images.matching(publisher, offer, sku)}
        return [recs[v] for v in sort_newest_first(recs)]

    def offers(self) -> list[SkuEntry]:
        """Every sku with at least one version, by publisher, offer, sku."""
        by_sku: dict[tuple[str, str, str], list[str]] = {}
        for r in self.store.images.matching():
            by_sku.setdefault((r.publisher, r.offer, r.sku), []).append(r.version)
        return [
            SkuEntry(pub, offer, sku, tuple(sort_newest_first(vs)))
            for (pub, offer, sku), vs in sorted(by_sku.items())
        ]

    @staticmethod
    def manifest(rec: ImageRecord) -> dict[str, Any]:
        """The API's view of one version (never the blob's local path)."""
        out: dict[str, Any] = {
            "publisher": rec.publisher,
            "offer": rec.offer,
            "sku": rec.sku,
            "version": rec.version,
            "sha256": rec.sha256,
            "sizeBytes": rec.size_bytes,
            "virtualSizeBytes": rec.virtual_size,
            "publishedAt": iso8601(rec.published_at),
        }
        if rec.kernel_sha256 is not None:
            out["kernelSha256"] = rec.kernel_sha256
        if rec.initrd_sha256 is not None:
            out["initrdSha256"] = rec.initrd_sha256
        if rec.cmdline is not None:
            out["cmdline"] = rec.cmdline
        return out
