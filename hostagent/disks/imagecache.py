"""The host's cache of base images and boot artifacts (kernels, initrds).

As Nova's image cache: a file is named by its sha256 in one directory,
downloaded to ``<sha256>.part`` while the sha256 is computed, verified, then
renamed into place read-only (0444). The directory stays 0755 because
libvirt's QEMU user reads the bases. One lock per sha256 (a thread lock plus
an ``fcntl`` lock file, so neither two threads nor two agent processes fetch
the same image twice), and an unused file is deleted only after its age is
checked again under that lock.

Beside each cached file a small record ``<sha256>.json`` says what it was
verified as (``raw``: sha256 only; ``qcow2``: sha256 plus ``qemu-img``
checks) and when it was last used. A cached file is trusted without
re-hashing: it got its name only after verification and is read-only. A
file without a record for the kind asked (the agent died between the rename
and the record, or a kernel's bytes are now asked for as a qcow2) is
verified again in place before it is handed out.

Layout::

    <root>/<sha256>         the verified file, 0444
    <root>/<sha256>.json    record: kinds verified, source, cachedAt, lastUsed
    <root>/<sha256>.part    a download in progress (only while its lock is held)
    <root>/.locks/<sha256>  lock files
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import requests

from kvmss.base import atomicfile, qemuimg
from kvmss.base.clock import Clock, SystemClock

log = logging.getLogger(__name__)

Kind = Literal["qcow2", "raw"]
KINDS: tuple[Kind, ...] = ("qcow2", "raw")

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 20
DEFAULT_MAX_BYTES = 64 << 30
DEFAULT_TIMEOUT = (10.0, 60.0)  # connect, and between two reads


class ImageRejected(Exception):
    """A download was refused; nothing of it is left in the cache.

    ``code`` is one of: Sha256Mismatch, HttpError, TooLarge, NotQcow2,
    BackingFile, DataFile, CheckFailed, DownloadFailed, NoSpace (the cache's
    filesystem is full), StoreFailed (writing into the cache failed
    otherwise). ``transient`` is true when trying again later may succeed
    (connection errors, timeouts, HTTP 5xx and 429, a full disk).
    """

    def __init__(self, code: str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` of ``url``: no user info, query or fragment
    (they may hold tokens)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable url>"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _check_sha(sha256: str) -> str:
    if not isinstance(sha256, str) or not SHA256_RE.fullmatch(sha256):
        raise ValueError(f"sha256 {str(sha256)[:80]!r} is invalid: must be 64 lowercase hex digits")
    return sha256


class ImageCache:
    def __init__(
        self,
        root: Path,
        *,
        clock: Clock | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.root = Path(root)
        self.clock: Clock = clock or SystemClock()
        self.max_bytes = max_bytes
        self.session = session or requests.Session()
        self.timeout = timeout
        self._locks_guard = threading.Lock()
        self._thread_locks: dict[str, threading.Lock] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self._lock_dir = self.root / ".locks"
        self._lock_dir.mkdir(mode=0o700, exist_ok=True)

    # --- names -------------------------------------------------------------

    def path_for(self, sha256: str) -> Path:
        return self.root / _check_sha(sha256)

    def _record_path(self, sha256: str) -> Path:
        return self.root / f"{sha256}.json"

    def _part_path(self, sha256: str) -> Path:
        return self.root / f"{sha256}.part"

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    # --- locking -----------------------------------------------------------

    def _thread_lock(self, sha256: str) -> threading.Lock:
        with self._locks_guard:
            lock = self._thread_locks.get(sha256)
            if lock is None:
                lock = self._thread_locks[sha256] = threading.Lock()
            return lock

    @contextlib.contextmanager
    def _locked(self, sha256: str, *, blocking: bool = True) -> Iterator[bool]:
        """Hold the lock of one sha256 (yields False when ``blocking`` is
        false and someone else holds it)."""
        tlock = self._thread_lock(sha256)
        if not tlock.acquire(blocking=blocking):
            yield False
            return
        try:
            fd = os.open(self._lock_dir / sha256, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                except OSError as e:
                    if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK) and not blocking:
                        yield False
                        return
                    raise
                yield True
            finally:
                os.close(fd)  # releases the flock
        finally:
            tlock.release()

    # --- records -------------------------------------------------------------

    def _read_record(self, sha256: str) -> dict[str, Any]:
        try:
            rec = atomicfile.read_json(self._record_path(sha256))
        except (OSError, ValueError):
            return {}
        return rec if isinstance(rec, dict) else {}

    def _write_record(self, sha256: str, rec: dict[str, Any]) -> None:
        """Write the record; a failure (a full disk) is logged, not raised: the
        file itself is verified and in place, and without a record for its kind
        the next fetch verifies it again before handing it out."""
        try:
            atomicfile.write_json(self._record_path(sha256), rec, mode=0o644)
        except OSError as e:
            log.warning("cannot write the record of cached %s: %s", sha256, e.strerror or e)

    def last_used(self, sha256: str) -> float | None:
        """When the file was last handed out (clock time), None if not cached."""
        path = self.path_for(sha256)
        used = self._read_record(sha256).get("lastUsed")
        if isinstance(used, int | float):
            return float(used)
        try:
            return path.stat().st_mtime
        except FileNotFoundError:
            return None

    # --- fetching ------------------------------------------------------------

    def fetch(self, url: str, sha256: str, kind: Kind = "qcow2") -> Path:
        """The cached file with this sha256, downloaded from ``url`` and
        verified first if it is not cached yet. Raises :class:`ImageRejected`."""
        _check_sha(sha256)
        if kind not in KINDS:
            raise ValueError(f"kind {kind!r} is invalid: use one of {KINDS}")
        scheme = urlsplit(url).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"url {redact_url(url)} is invalid: must be http:// or https://")
        path = self.path_for(sha256)
        with self._locked(sha256):
            rec = self._read_record(sha256) if path.exists() else {}
            kinds = set(rec.get("kinds", []))
            if path.exists() and kind not in kinds:
                # Cached, but never verified as this kind: verify it in place.
                self._verify(path, url, sha256, kind, rehash=not kinds)
                kinds.add(kind)
                rec = {**rec, "sha256": sha256, "kinds": sorted(kinds)}
                rec.setdefault("source", redact_url(url))
                rec.setdefault("cachedAt", self.clock.now())
            elif not path.exists():
                self._download(url, sha256, kind)
                now = self.clock.now()
                rec = {
                    "sha256": sha256,
                    "kinds": [kind],
                    "source": redact_url(url),
                    "cachedAt": now,
                }
                log.info("cached %s %s from %s", kind, sha256, redact_url(url))
            rec["lastUsed"] = self.clock.now()
            self._write_record(sha256, rec)
        return path

    def _download(self, url: str, sha256: str, kind: Kind) -> None:
        where = redact_url(url)
        part = self._part_path(sha256)
        part.unlink(missing_ok=True)  # left by a crashed agent; we hold the lock
        try:
            actual = self._stream_to(url, part, where)
            if actual != sha256:
                raise ImageRejected(
                    "Sha256Mismatch",
                    f"image {where}: sha256 mismatch: expected {sha256}, got {actual}",
                )
            if kind == "qcow2":
                self._inspect_qcow2(part, where)
            try:
                os.chmod(part, 0o444)
                os.replace(part, self.path_for(sha256))
                atomicfile.fsync_dir(self.root)
            except OSError as e:
                raise self._store_failed(where, e, "putting it in place") from None
        except BaseException:
            part.unlink(missing_ok=True)
            raise

    def _stream_to(self, url: str, part: Path, where: str) -> str:
        """Download ``url`` into ``part``; the sha256 of what was written."""
        digest = hashlib.sha256()
        total = 0
        try:
            with self.session.get(url, stream=True, timeout=self.timeout) as resp:
                if resp.status_code != 200:
                    raise ImageRejected(
                        "HttpError",
                        f"image {where}: HTTP {resp.status_code} {resp.reason or ''}".rstrip(),
                        transient=resp.status_code >= 500 or resp.status_code == 429,
                    )
                declared = resp.headers.get("Content-Length")
                if declared is not None and declared.isdigit():
                    if int(declared) > self.max_bytes:
                        raise self._too_large(where, f"it declares {declared} bytes")
                    free = self.free_bytes()
                    if int(declared) > free:
                        raise self._no_space(where, f"it is {declared} bytes", free)
                fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    for chunk in resp.iter_content(CHUNK):
                        total += len(chunk)
                        if total > self.max_bytes:
                            raise self._too_large(where, f"more than {self.max_bytes} bytes came")
                        digest.update(chunk)
                        f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
        except requests.RequestException as e:
            raise ImageRejected(
                "DownloadFailed",
                f"image {where}: download failed: {type(e).__name__}",
                transient=True,
            ) from None
        except OSError as e:
            raise self._store_failed(where, e, f"after {total} bytes") from None
        return digest.hexdigest()

    def free_bytes(self) -> int:
        """Bytes an unprivileged writer may still put in the cache's filesystem."""
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    def _no_space(self, where: str, detail: str, free: int) -> ImageRejected:
        return ImageRejected(
            "NoSpace",
            f"image {where}: no space left in the host's image cache {self.root}: {detail},"
            f" {free} bytes are free",
            transient=True,
        )

    def _store_failed(self, where: str, e: OSError, detail: str) -> ImageRejected:
        """What a failed write into the cache (a full disk, an I/O error) says."""
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return self._no_space(where, f"writing failed {detail}", self.free_bytes())
        return ImageRejected(
            "StoreFailed",
            f"image {where}: writing into the host's image cache {self.root} failed {detail}:"
            f" {e.strerror or type(e).__name__}",
        )

    def _too_large(self, where: str, detail: str) -> ImageRejected:
        return ImageRejected(
            "TooLarge", f"image {where}: too large: {detail}, the limit is {self.max_bytes}"
        )

    def _inspect_qcow2(self, path: Path, where: str) -> None:
        try:
            info = qemuimg.info(path, "qcow2")
        except qemuimg.QemuImgError as e:
            first = e.stderr.strip().splitlines()[-1:] or [e.reason or f"exit {e.returncode}"]
            raise ImageRejected(
                "NotQcow2", f"image {where}: not a qcow2 image: {first[0]}"
            ) from None
        if info.format != "qcow2":
            raise ImageRejected("NotQcow2", f"image {where}: not a qcow2 image: {info.format}")
        if info.backing_file is not None:
            raise ImageRejected(
                "BackingFile",
                f"image {where}: image has its own backing file ({info.backing_file[:200]!r})",
            )
        if info.data_file is not None:
            raise ImageRejected(
                "DataFile",
                f"image {where}: image has an external data file ({info.data_file[:200]!r})",
            )
        try:
            res = qemuimg.check(path, "qcow2")
        except qemuimg.QemuImgError as e:
            raise ImageRejected(
                "CheckFailed", f"image {where}: qemu-img check could not run: {e}"
            ) from None
        if not res.ok:
            raise ImageRejected("CheckFailed", f"image {where}: qemu-img check: {res.reason()}")

    def _verify(self, path: Path, url: str, sha256: str, kind: Kind, *, rehash: bool) -> None:
        """Verify an already-cached file; on failure it is removed only when
        its bytes are wrong (a good raw artifact stays when asked for as qcow2)."""
        where = redact_url(url)
        if rehash:
            digest = hashlib.sha256()
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
            if digest.hexdigest() != sha256:
                path.unlink(missing_ok=True)
                self._record_path(sha256).unlink(missing_ok=True)
                raise ImageRejected(
                    "Sha256Mismatch",
                    f"cached {sha256}: sha256 mismatch: got {digest.hexdigest()}; removed it",
                )
        if kind == "qcow2":
            self._inspect_qcow2(path, where)

    # --- cleaning ------------------------------------------------------------

    def cached(self) -> list[str]:
        """sha256 of every cached file."""
        return sorted(p.name for p in self.root.iterdir() if SHA256_RE.fullmatch(p.name))

    def remove_unused(self, in_use: set[str], min_age_seconds: float) -> list[str]:
        """Delete cached files not in ``in_use`` and unused for at least
        ``min_age_seconds``; the sha256 of those deleted. Also clears
        ``.part`` files no download holds."""
        removed: list[str] = []
        for sha in self.cached():
            if sha in in_use or not self._old_enough(sha, min_age_seconds):
                continue
            with self._locked(sha):
                # A fetch may have used it while we waited: check again.
                if not self._old_enough(sha, min_age_seconds):
                    continue
                self.path_for(sha).unlink(missing_ok=True)
                self._record_path(sha).unlink(missing_ok=True)
                atomicfile.fsync_dir(self.root)
            log.info("removed unused cached image %s", sha)
            removed.append(sha)
        for part in self.root.glob("*.part"):
            sha = part.name.removesuffix(".part")
            if SHA256_RE.fullmatch(sha):
                with self._locked(sha, blocking=False) as got:
                    if got:
                        part.unlink(missing_ok=True)
        return removed

    def _old_enough(self, sha256: str, min_age_seconds: float) -> bool:
        used = self.last_used(sha256)
        return used is not None and self.clock.now() - used >= min_age_seconds
