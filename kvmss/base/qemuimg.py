"""Every qemu-img call of kvmss: small functions that build argument lists,
run qemu-img and parse its ``--output json``.

Untrusted images (anything downloaded) are inspected under a CPU-time and
address-space limit (``prlimit``, which is safe to use from threads, unlike
``preexec_fn``), always with an explicit format when one is known, and
``info`` passes ``--force-share`` because bases are read by running guests.
Paths are always handed to qemu-img absolute, so a file name can never be
read as a protocol (``nbd:``, ``json:``).

``qemu-img check`` exit codes (qemu-img(1)):

====  ==========================================================
0     no inconsistencies
1     check not completed: an internal error (``check-errors``),
      or the image could not be opened at all
2     corruptions found
3     leaked clusters only (wasted space, data intact)
63    the format does not support checks
====  ==========================================================

qemu-img reports a truncated qcow2 as corrupt only when clusters it
references lie wholly past the end of the file, and says nothing when the
lost tail held only metadata it did not follow (a refcount block, an L2
table): such a file checks clean with exit code 0. :func:`check` therefore
also compares the ``image-end-offset`` qemu-img computes with the file's
size and calls the image truncated when at least one whole cluster is
missing. A loss smaller than one cluster is indistinguishable from the
short last cluster qemu itself writes (a fresh qcow2 ends 16 bytes into its
refcount block); the sha256 of a download is what catches that.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QEMU_IMG = "qemu-img"

# Limits for inspecting untrusted images, as vdsm does for qemu-img info.
INSPECT_CPU_SECONDS = 30
INSPECT_ADDRESS_SPACE_BYTES = 1 << 30

# Formats kvmss hands to qemu-img. A closed set keeps anything else (a typo,
# a value starting with "-") out of the argument list.
FORMATS = frozenset({"qcow2", "raw", "vmdk", "vhdx", "vpc", "vdi", "qed"})

_STDERR_KEEP = 2000


class QemuImgError(Exception):
    """qemu-img failed: carries what ran, its exit code and what it printed.

    A negative ``returncode`` is the signal that killed it (for example
    SIGXCPU when the CPU limit for untrusted images was hit).
    """

    def __init__(
        self, cmd: Sequence[str], returncode: int, stderr: str, stdout: str = "", reason: str = ""
    ) -> None:
        self.cmd = list(cmd)
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout
        self.reason = reason
        super().__init__(self._describe())

    def _describe(self) -> str:
        what = self.reason or f"exit code {self.returncode}"
        err = self.stderr.strip()
        if len(err) > _STDERR_KEEP:
            err = "..." + err[-_STDERR_KEEP:]
        msg = f"{' '.join(self.cmd)} failed: {what}"
        return f"{msg}; stderr: {err}" if err else msg


@dataclass(frozen=True)
class ImageInfo:
    format: str
    virtual_size: int
    actual_size: int
    backing_file: str | None
    data_file: str | None
    cluster_size: int | None
    dirty: bool | None
    backing_format: str | None = None
    # qcow2's own "corrupt" header bit (set by qemu when it saw corruption).
    corrupt: bool | None = None


@dataclass(frozen=True)
class CheckResult:
    """The outcome of ``qemu-img check``.

    ``ok`` means: no corruptions, the check completed, and the file is not
    truncated. Leaked clusters alone leave ``ok`` true (they waste space but
    lose no data; vdsm treats exit code 3 the same way).
    """

    ok: bool
    corruptions: int
    leaks: int
    check_errors: int
    truncated: bool
    exit_code: int
    image_end_offset: int | None
    file_size: int
    message: str

    def reason(self) -> str:
        """One line saying why the image failed (empty when ``ok``)."""
        parts = []
        if self.truncated:
            parts.append(
                f"file is truncated: {self.file_size} bytes but its metadata reaches"
                f" {self.image_end_offset}"
            )
        if self.corruptions:
            parts.append(f"{self.corruptions} corruptions")
        if self.check_errors:
            parts.append(f"{self.check_errors} errors prevented a full check")
        if not parts and not self.ok:
            parts.append(f"qemu-img check exit code {self.exit_code}")
        return "; ".join(parts)


def _fmt(fmt: str, field: str = "format") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"{field} {fmt!r} is not supported: use one of {sorted(FORMATS)}")
    return fmt


def _abs(path: Path) -> str:
    return os.path.abspath(os.fspath(path))


def _limited(cmd: list[str]) -> list[str]:
    return [
        "prlimit",
        f"--cpu={INSPECT_CPU_SECONDS}",
        f"--as={INSPECT_ADDRESS_SPACE_BYTES}",
        "--",
        *cmd,
    ]


def _run(
    cmd: list[str], *, ok_codes: Sequence[int] = (0,), limit: bool = False
) -> subprocess.CompletedProcess[str]:
    argv = _limited(cmd) if limit else cmd
    env = dict(os.environ, LC_ALL="C")
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, errors="replace", env=env, check=False
        )
    except FileNotFoundError as e:
        raise QemuImgError(
            cmd, 127, "", reason=f"{e.filename} not found (install qemu-utils)"
        ) from None
    if proc.returncode not in ok_codes:
        reason = ""
        if proc.returncode < 0:
            reason = f"killed by signal {-proc.returncode}"
            if limit:
                reason += (
                    f" (limits: {INSPECT_CPU_SECONDS}s CPU,"
                    f" {INSPECT_ADDRESS_SPACE_BYTES} bytes address space)"
                )
        raise QemuImgError(cmd, proc.returncode, proc.stderr, proc.stdout, reason=reason)
    return proc


def _parse_json(cmd: list[str], proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        data = json.loads(proc.stdout)
    except ValueError as e:
        raise QemuImgError(
            cmd, proc.returncode, proc.stderr, proc.stdout, reason=f"output is not JSON ({e})"
        ) from None
    if not isinstance(data, dict):
        raise QemuImgError(
            cmd, proc.returncode, proc.stderr, proc.stdout, reason="output is not a JSON object"
        )
    return data


def _opt_int(data: dict[str, Any], key: str) -> int | None:
    v = data.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _opt_bool(data: dict[str, Any], key: str) -> bool | None:
    v = data.get(key)
    return v if isinstance(v, bool) else None


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    v = data.get(key)
    return v if isinstance(v, str) else None


def info(path: Path, fmt: str | None = None) -> ImageInfo:
    """``qemu-img info`` of one image (never its backing chain).

    Pass ``fmt`` for anything not known to be trusted: without it qemu-img
    probes the format, and a raw file can pose as a qcow2 with a backing file.
    Runs with ``--force-share`` (the image may be open by a guest) and under
    the inspection limits.
    """
    cmd = [QEMU_IMG, "info", "--output", "json", "--force-share"]
    if fmt is not None:
        cmd += ["-f", _fmt(fmt)]
    cmd.append(_abs(path))
    proc = _run(cmd, limit=True)
    data = _parse_json(cmd, proc)
    fmt_out = _opt_str(data, "format")
    vsize = _opt_int(data, "virtual-size")
    if fmt_out is None or vsize is None:
        raise QemuImgError(
            cmd, 0, proc.stderr, proc.stdout, reason="output lacks format or virtual-size"
        )
    specific = data.get("format-specific")
    spec_data: dict[str, Any] = {}
    if isinstance(specific, dict) and isinstance(specific.get("data"), dict):
        spec_data = specific["data"]
    return ImageInfo(
        format=fmt_out,
        virtual_size=vsize,
        actual_size=_opt_int(data, "actual-size") or 0,
        backing_file=_opt_str(data, "backing-filename"),
        data_file=_opt_str(spec_data, "data-file"),
        cluster_size=_opt_int(data, "cluster-size"),
        dirty=_opt_bool(data, "dirty-flag"),
        backing_format=_opt_str(data, "backing-filename-format"),
        corrupt=_opt_bool(spec_data, "corrupt"),
    )


def _check_target(path: Path, fmt: str) -> list[str]:
    if fmt == "qcow2":
        # Open the image with its backing file cut off, so checking an
        # untrusted qcow2 never opens a file it names.
        spec = {
            "driver": "qcow2",
            "backing": None,
            "file": {"driver": "file", "filename": _abs(path)},
        }
        return ["json:" + json.dumps(spec, separators=(",", ":"))]
    return ["-f", fmt, _abs(path)]


def check(path: Path, fmt: str = "qcow2") -> CheckResult:
    """``qemu-img check`` one image, never opening its backing file.

    Returns a result for exit codes 0, 2 and 3 (and 1 when qemu-img still
    reported counts); raises :class:`QemuImgError` when the check could not
    run at all (file missing, not of format ``fmt``, format without checks,
    limits hit).
    """
    fmt = _fmt(fmt)
    cmd = [QEMU_IMG, "check", "--output", "json", *_check_target(path, fmt)]
    proc = _run(cmd, ok_codes=(0, 1, 2, 3), limit=True)
    if proc.returncode == 1 and not proc.stdout.strip():
        raise QemuImgError(cmd, 1, proc.stderr, proc.stdout)
    data = _parse_json(cmd, proc)
    corruptions = _opt_int(data, "corruptions") or 0
    leaks = _opt_int(data, "leaks") or 0
    check_errors = _opt_int(data, "check-errors") or 0
    end = _opt_int(data, "image-end-offset")
    size = os.stat(path).st_size
    truncated = False
    if end is not None and end > size and fmt == "qcow2":
        cluster = info(path, fmt).cluster_size or 65536
        truncated = end - size >= cluster
    ok = proc.returncode in (0, 3) and corruptions == 0 and check_errors == 0 and not truncated
    return CheckResult(
        ok=ok,
        corruptions=corruptions,
        leaks=leaks,
        check_errors=check_errors,
        truncated=truncated,
        exit_code=proc.returncode,
        image_end_offset=end,
        file_size=size,
        message=(proc.stdout + proc.stderr).strip()[-_STDERR_KEEP:],
    )


def _claim(path: Path) -> None:
    """Create ``path`` empty, or raise FileExistsError: no disk is ever overwritten.
    Readable by its owner only: a disk holds a guest's data (libvirt's
    dynamic_ownership hands it to the QEMU user while a guest runs)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.close(fd)


def _create_claimed(path: Path, cmd: list[str]) -> None:
    _claim(path)
    try:
        _run(cmd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _check_size(size_bytes: int, field: str = "size_bytes") -> str:
    if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or size_bytes <= 0:
        raise ValueError(f"{field} must be a positive integer, got {size_bytes!r}")
    return str(size_bytes)


def create(
    path: Path, size_bytes: int, fmt: str = "qcow2", *, data_file: Path | None = None
) -> None:
    """Create a fresh empty disk of ``size_bytes``; FileExistsError if ``path`` exists.

    ``data_file`` (qcow2 only) keeps the guest data in a separate raw file;
    kvmss never serves such images, but tests need to make them.
    """
    size = _check_size(size_bytes)
    cmd = [QEMU_IMG, "create", "-q", "-f", _fmt(fmt)]
    if data_file is not None:
        if fmt != "qcow2":
            raise ValueError(f"data_file needs format qcow2, got {fmt!r}")
        cmd += ["-o", "data_file=" + _abs(data_file).replace(",", ",,")]
    cmd += [_abs(path), size]
    _create_claimed(path, cmd)


def create_overlay(
    path: Path, backing: Path, backing_fmt: str = "qcow2", *, size_bytes: int | None = None
) -> None:
    """Create a qcow2 at ``path`` whose backing file is ``backing`` (stored absolute).

    O(1) in the size of the backing image. ``size_bytes`` grows the overlay
    beyond the backing image's size (it may not be smaller). Raises
    FileExistsError if ``path`` exists, FileNotFoundError if ``backing``
    does not.
    """
    backing_abs = _abs(backing)
    if not os.path.exists(backing_abs):
        raise FileNotFoundError(f"backing file {backing_abs} does not exist")
    cmd = [QEMU_IMG, "create", "-q", "-f", "qcow2", "-F", _fmt(backing_fmt, "backing_fmt")]
    cmd += ["-b", backing_abs, _abs(path)]
    if size_bytes is not None:
        cmd.append(_check_size(size_bytes))
    _create_claimed(path, cmd)


def convert(
    src: Path, dst: Path, *, src_format: str, dst_format: str = "qcow2", compress: bool = False
) -> None:
    """Copy ``src`` into a new standalone image ``dst`` (``qemu-img convert``).

    ``compress`` writes compressed qcow2 clusters (qcow2 only). A ``dst``
    left half-written by a failed convert is removed.
    """
    cmd = [QEMU_IMG, "convert", "-f", _fmt(src_format, "src_format")]
    cmd += ["-O", _fmt(dst_format, "dst_format")]
    if compress:
        if dst_format != "qcow2":
            raise ValueError(f"compress needs dst_format qcow2, got {dst_format!r}")
        cmd.append("-c")
    cmd += [_abs(src), _abs(dst)]
    existed = os.path.lexists(dst)
    try:
        _run(cmd)
    except BaseException:
        if not existed:
            Path(dst).unlink(missing_ok=True)
        raise
