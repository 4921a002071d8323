"""A host whose storage fills up, below the guest scenarios: the agent's image
cache and OS disk generations on a real size-limited tmpfs (mounted here, as
root), so every write fails the way a full disk makes it fail (ENOSPC).

The guest scenario (test_guest_faults.py, host-disk-full-during-reimage)
meets the refusal before any byte is written, because the controller says
how big the image is; these cover a download that fills the disk as it goes
(no Content-Length), an overlay that no longer fits once the base is cached,
and any other ENOSPC an operation meets.
"""

from __future__ import annotations

import errno
import hashlib
import http.server
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.served import FileServer
from hostagent.contract import instancespec
from hostagent.disks.imagecache import ImageCache, ImageRejected
from hostagent.disks.layout import Layout
from hostagent.guest.reports import ReportStore
from hostagent.guest.tokens import GuestTokens
from hostagent.lifecycle.generations import GenerationBuilder, Network
from hostagent.lifecycle.operations import OperationFailed, Operations
from hostagent.network.addresses import Subnet
from kvmss.base.clock import SystemClock
from tests.faults.guestfaults import MiB, filled
from tests.fixtures import make_qcow2, sha256_file, storage_root

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (needs root)")


@pytest.fixture
def small_fs() -> Iterator[Path]:
    """A 4 MiB tmpfs."""
    with storage_root("diskfull") as root:
        mnt = root / "mnt"
        mnt.mkdir()
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", mnt], check=True
        )
        try:
            yield mnt
        finally:
            subprocess.run(["umount", mnt], check=True)


class _Chunked(http.server.BaseHTTPRequestHandler):
    """Serves ``self.server.body`` with no Content-Length (HTTP/1.0, then closes)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        body: bytes = self.server.body  # type: ignore[attr-defined]
        for k in range(0, len(body), 64 << 10):
            self.wfile.write(body[k : k + (64 << 10)])

    def log_message(self, *_a: object) -> None:
        return


@pytest.fixture
def unsized() -> Iterator[tuple[str, bytes]]:
    """A URL serving 8 MiB of bytes without saying how many, and the bytes."""
    body = os.urandom(8 * MiB)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Chunked)
    httpd.body = body  # type: ignore[attr-defined]
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/disk.qcow2?sig=secret", body
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_that_fills_the_disk_is_refused_clearly_and_leaves_nothing(
    small_fs: Path, unsized: tuple[str, bytes]
) -> None:
    url, body = unsized
    cache = ImageCache(small_fs / "cache")
    with pytest.raises(ImageRejected) as ei:
        cache.fetch(url, hashlib.sha256(body).hexdigest(), "raw")
    assert ei.value.code == "NoSpace"
    assert ei.value.transient
    assert "no space left" in str(ei.value) and "writing failed after" in str(ei.value)
    assert "secret" not in str(ei.value)
    assert sorted(p.name for p in (small_fs / "cache").iterdir()) == [".locks"]
    assert cache.free_bytes() > 3 * MiB, "the partial download was not removed"


def test_download_larger_than_the_free_space_is_refused_before_writing(small_fs: Path) -> None:
    with storage_root("diskfull-src") as src:
        (src / "kernel").write_bytes(os.urandom(6 * MiB))
        sha = sha256_file(src / "kernel")
        files = FileServer(src)
        cache = ImageCache(small_fs / "cache")
        free = cache.free_bytes()
        try:
            with pytest.raises(ImageRejected) as ei:
                cache.fetch(files.url("kernel"), sha, "raw")
        finally:
            files.close()
    assert ei.value.code == "NoSpace"
    assert f"it is {6 * MiB} bytes, {free} bytes are free" in str(ei.value)
    assert sorted(p.name for p in (small_fs / "cache").iterdir()) == [".locks"]
    assert cache.free_bytes() == free


def _builder(root: Path) -> GenerationBuilder:
    layout = Layout(root)
    layout.prepare()
    clock = SystemClock()
    return GenerationBuilder(
        layout,
        ImageCache(layout.cache_dir, clock=clock),
        GuestTokens(layout.guest_secret),
        ReportStore(layout.reports, clock),
        Network(Subnet("10.99.0.0/24"), 8091),
    )


def test_generation_that_no_longer_fits_fails_with_no_space_and_leaves_no_files(
    small_fs: Path,
) -> None:
    with storage_root("diskfull-src") as src:
        sha = make_qcow2(src / "base.qcow2", b"base", size_mib=16)
        files = FileServer(src)
        try:
            image = instancespec.ImageSpec(
                reference=instancespec.ImageReference(
                    publisher="kvmss", offer="tiny", sku="1", version="2"
                ),
                url=files.url("base.qcow2"),
                sha256=sha,
            )
            builder = _builder(small_fs / "agent")
            spec = instancespec.InstanceSpec(
                image=image, osProfile=instancespec.OsProfile(computerName="vm")
            )
            builder.fetch(image)  # the base is cached: only the new disk must fit
            with filled(small_fs, 0), pytest.raises(OperationFailed) as ei:
                builder.build("vm-0", 2, image, spec, "10.99.0.5", "52:54:00:00:00:05")
        finally:
            files.close()
    assert ei.value.code == "NoSpace", ei.value.message
    assert "cannot write OS disk generation 2" in ei.value.message
    assert builder.files_on_disk("vm-0") == set()


def test_an_operation_that_meets_a_full_disk_says_so(tmp_path: Path) -> None:
    ops = Operations(tmp_path, SystemClock())

    def work(_op_id: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/var/lib/kvmss/x")

    op, _ = ops.submit("reimage", "vm-0", work)
    deadline = time.monotonic() + 10
    while (done := ops.get(op.id)) is not None and done.status == "InProgress":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    ops.shutdown()
    assert done is not None and done.error is not None
    assert done.status == "Failed"
    assert done.error.code == "NoSpace"
    assert "no space left" in done.error.message.lower()
