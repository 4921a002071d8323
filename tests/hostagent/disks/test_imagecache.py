"""hostagent.disks.imagecache against a real HTTP server on 127.0.0.1 and real qcow2 files."""

from __future__ import annotations

import hashlib
import http.server
import os
import stat
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hostagent.disks.imagecache import ImageCache, ImageRejected, redact_url
from kvmss.base import qemuimg
from kvmss.base.clock import FakeClock

MiB = 1 << 20
REPO = Path(__file__).resolve().parents[3]


@dataclass
class Server:
    root: Path
    base: str
    hits: Counter[str] = field(default_factory=Counter)
    delay: float = 0.0

    def url(self, name: str, query: str = "") -> str:
        return f"{self.base}/{name}" + (f"?{query}" if query else "")

    def publish(self, name: str, src: Path) -> str:
        """Put ``src`` on the server as ``name``; its sha256."""
        data = src.read_bytes()
        (self.root / name).write_bytes(data)
        return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    served = tmp_path / "served"
    served.mkdir()
    state: dict[str, Server] = {}

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(served), **kwargs)

        def do_GET(self) -> None:
            srv = state["s"]
            path = self.path.split("?", 1)[0]
            srv.hits[path] += 1
            if srv.delay:
                time.sleep(srv.delay)
            if path.startswith("/nolength/"):
                # No Content-Length: the body ends when the connection closes.
                data = (served / path.removeprefix("/nolength/")).read_bytes()
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
                self.close_connection = True
                return
            super().do_GET()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["s"] = Server(served, f"http://127.0.0.1:{httpd.server_address[1]}")
    t = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        yield state["s"]
    finally:
        httpd.shutdown()
        httpd.server_close()


def _qcow2(tmp_path: Path, name: str = "base.qcow2", data_mib: int = 2) -> Path:
    raw = tmp_path / f"{name}.raw"
    with open(raw, "wb") as f:
        f.write(os.urandom(data_mib * MiB))
        f.truncate(32 * MiB)
    out = tmp_path / name
    qemuimg.convert(raw, out, src_format="raw")
    raw.unlink()
    return out


def _left_in(cache_root: Path) -> list[str]:
    return sorted(p.name for p in cache_root.iterdir() if p.name != ".locks")


def test_good_image_is_cached_read_only_and_shared(tmp_path: Path, server: Server) -> None:
    sha = server.publish("base.qcow2", _qcow2(tmp_path))
    clock = FakeClock()
    cache = ImageCache(tmp_path / "cache", clock=clock)
    assert not cache.has(sha)
    path = cache.fetch(server.url("base.qcow2"), sha)
    assert path == cache.path_for(sha) == tmp_path / "cache" / sha
    assert cache.has(sha)
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o755
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert qemuimg.info(path, "qcow2").backing_file is None
    assert cache.last_used(sha) == clock.now()

    clock.advance(100)
    assert cache.fetch(server.url("base.qcow2"), sha) == path
    # A second agent process on the same directory finds it too.
    other = ImageCache(tmp_path / "cache", clock=clock)
    assert other.fetch(server.url("base.qcow2"), sha) == path
    assert server.hits["/base.qcow2"] == 1
    assert cache.last_used(sha) == clock.now()
    assert _left_in(tmp_path / "cache") == [sha, f"{sha}.json"]


def test_sha_mismatch_is_rejected_and_nothing_is_left(tmp_path: Path, server: Server) -> None:
    real = server.publish("base.qcow2", _qcow2(tmp_path))
    wanted = hashlib.sha256(b"something else").hexdigest()
    cache = ImageCache(tmp_path / "cache")
    with pytest.raises(ImageRejected) as ei:
        cache.fetch(server.url("base.qcow2", "token=s3cr3t"), wanted)
    err = ei.value
    assert err.code == "Sha256Mismatch"
    assert wanted in str(err) and real in str(err)
    assert "127.0.0.1" in str(err) and "/base.qcow2" in str(err)
    assert "s3cr3t" not in str(err)
    assert _left_in(tmp_path / "cache") == []
    assert not cache.has(wanted)


def test_image_with_its_own_backing_file_is_rejected(tmp_path: Path, server: Server) -> None:
    base = _qcow2(tmp_path)
    ov = tmp_path / "ov.qcow2"
    qemuimg.create_overlay(ov, base)
    sha = server.publish("ov.qcow2", ov)
    cache = ImageCache(tmp_path / "cache")
    with pytest.raises(ImageRejected, match="image has its own backing file") as ei:
        cache.fetch(server.url("ov.qcow2"), sha)
    assert ei.value.code == "BackingFile"
    assert _left_in(tmp_path / "cache") == []


def test_image_with_a_data_file_is_rejected(tmp_path: Path, server: Server) -> None:
    img = tmp_path / "df.qcow2"
    qemuimg.create(img, 16 * MiB, data_file=tmp_path / "df.raw")
    sha = server.publish("df.qcow2", img)
    cache = ImageCache(tmp_path / "cache")
    with pytest.raises(ImageRejected, match="data file") as ei:
        cache.fetch(server.url("df.qcow2"), sha)
    assert ei.value.code == "DataFile"
    assert _left_in(tmp_path / "cache") == []


@pytest.mark.parametrize("cut", ["half", "tenth", "l1-table"])
def test_truncated_qcow2_is_rejected(tmp_path: Path, server: Server, cut: str) -> None:
    img = _qcow2(tmp_path)
    data = img.read_bytes()
    # "l1-table" cuts where qemu-img check alone reports nothing wrong.
    keep = {
        "half": len(data) // 2,
        "tenth": len(data) // 10,
        "l1-table": struct.unpack(">Q", data[40:48])[0],
    }[cut]
    img.write_bytes(data[:keep])
    sha = server.publish("cut.qcow2", img)
    cache = ImageCache(tmp_path / "cache")
    with pytest.raises(ImageRejected, match="qemu-img check") as ei:
        cache.fetch(server.url("cut.qcow2"), sha)
    assert ei.value.code == "CheckFailed"
    assert _left_in(tmp_path / "cache") == []


def test_file_that_is_not_qcow2_is_rejected_as_qcow2_but_fine_as_raw(
    tmp_path: Path, server: Server
) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(os.urandom(300_000))
    sha = server.publish("vmlinuz", kernel)
    cache = ImageCache(tmp_path / "cache")
    with pytest.raises(ImageRejected) as ei:
        cache.fetch(server.url("vmlinuz"), sha, "qcow2")
    assert ei.value.code == "NotQcow2"
    assert _left_in(tmp_path / "cache") == []

    path = cache.fetch(server.url("vmlinuz"), sha, "raw")
    assert path.read_bytes() == kernel.read_bytes()
    # The same bytes asked for as a base image are inspected, not trusted.
    with pytest.raises(ImageRejected) as ei:
        cache.fetch(server.url("vmlinuz"), sha, "qcow2")
    assert ei.value.code == "NotQcow2"
    assert cache.has(sha)
    assert server.hits["/vmlinuz"] == 2


def test_raw_kind_only_verifies_sha256(tmp_path: Path, server: Server) -> None:
    ov = tmp_path / "ov.qcow2"
    qemuimg.create_overlay(ov, _qcow2(tmp_path))
    sha = server.publish("initrd.img", ov)  # would be rejected as qcow2
    cache = ImageCache(tmp_path / "cache")
    assert cache.fetch(server.url("initrd.img"), sha, "raw").read_bytes() == ov.read_bytes()


def test_http_404_is_rejected(tmp_path: Path, server: Server) -> None:
    cache = ImageCache(tmp_path / "cache")
    sha = hashlib.sha256(b"gone").hexdigest()
    with pytest.raises(ImageRejected, match="HTTP 404") as ei:
        cache.fetch(server.url("missing.qcow2", "sig=abc"), sha)
    assert ei.value.code == "HttpError"
    assert not ei.value.transient
    assert "sig=abc" not in str(ei.value)
    assert _left_in(tmp_path / "cache") == []


def test_unreachable_server_is_a_transient_failure(tmp_path: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    cache = ImageCache(tmp_path / "cache")
    with pytest.raises(ImageRejected) as ei:
        cache.fetch(f"http://127.0.0.1:{port}/a.qcow2", hashlib.sha256(b"a").hexdigest())
    assert ei.value.code == "DownloadFailed"
    assert ei.value.transient
    assert _left_in(tmp_path / "cache") == []


@pytest.mark.parametrize("prefix", ["", "nolength/"])
def test_too_large_is_rejected(tmp_path: Path, server: Server, prefix: str) -> None:
    sha = server.publish("base.qcow2", _qcow2(tmp_path))
    cache = ImageCache(tmp_path / "cache", max_bytes=MiB)
    with pytest.raises(ImageRejected, match="too large") as ei:
        cache.fetch(server.url(prefix + "base.qcow2"), sha)
    assert ei.value.code == "TooLarge"
    assert _left_in(tmp_path / "cache") == []
    # Within the limit the same image is fine, with or without Content-Length.
    big = ImageCache(tmp_path / "cache", max_bytes=64 * MiB)
    assert big.fetch(server.url(prefix + "base.qcow2"), sha).exists()


def test_concurrent_fetches_download_once(tmp_path: Path, server: Server) -> None:
    sha = server.publish("base.qcow2", _qcow2(tmp_path))
    server.delay = 0.3
    cache = ImageCache(tmp_path / "cache")
    barrier = threading.Barrier(4)
    results: list[Path | BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            results.append(cache.fetch(server.url("base.qcow2"), sha))
        except BaseException as e:
            results.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [cache.path_for(sha)] * 4
    assert server.hits["/base.qcow2"] == 1


def test_concurrent_fetches_from_two_processes_download_once(
    tmp_path: Path, server: Server
) -> None:
    sha = server.publish("base.qcow2", _qcow2(tmp_path))
    server.delay = 0.5
    root = tmp_path / "cache"
    code = (
        "import sys; from pathlib import Path; from hostagent.disks.imagecache import ImageCache;"
        "print(ImageCache(Path(sys.argv[1])).fetch(sys.argv[2], sys.argv[3]))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(root), server.url("base.qcow2"), sha],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == [str(root / sha)] * 2
    assert server.hits["/base.qcow2"] == 1


def test_remove_unused_respects_in_use_and_age(tmp_path: Path, server: Server) -> None:
    clock = FakeClock()
    cache = ImageCache(tmp_path / "cache", clock=clock)
    shas = []
    for i in range(3):
        blob = tmp_path / f"blob{i}"
        blob.write_bytes(os.urandom(1000))
        shas.append(server.publish(f"blob{i}", blob))
    a, b, c = shas
    cache.fetch(server.url("blob0"), a, "raw")
    cache.fetch(server.url("blob1"), b, "raw")
    clock.advance(3600)
    cache.fetch(server.url("blob2"), c, "raw")  # used an hour after a and b
    clock.advance(60)

    # a and b are an hour old, c one minute; b is in use.
    assert cache.remove_unused(in_use={b}, min_age_seconds=1800) == [a]
    assert not cache.has(a)
    assert cache.has(b) and cache.has(c)
    assert not (tmp_path / "cache" / f"{a}.json").exists()

    # Using b again resets its age even once it is no longer in use.
    cache.fetch(server.url("blob1"), b, "raw")
    clock.advance(120)
    assert cache.remove_unused(in_use=set(), min_age_seconds=150) == [c]
    assert cache.has(b)
    clock.advance(100)
    assert cache.remove_unused(in_use=set(), min_age_seconds=150) == [b]
    assert _left_in(tmp_path / "cache") == []


def test_remove_unused_rechecks_age_under_the_lock(tmp_path: Path, server: Server) -> None:
    clock = FakeClock()
    cache = ImageCache(tmp_path / "cache", clock=clock)
    blob = tmp_path / "blob"
    blob.write_bytes(b"kernel")
    sha = server.publish("blob", blob)
    cache.fetch(server.url("blob"), sha, "raw")
    clock.advance(1000)
    # Another thread holds the lock (a fetch using the file) while the
    # cleaner decides; the fetch refreshes lastUsed before letting go.
    removed: list[list[str]] = []
    with cache._locked(sha):
        t = threading.Thread(target=lambda: removed.append(cache.remove_unused(set(), 500)))
        t.start()
        time.sleep(0.2)
        assert t.is_alive()  # waiting for the lock
        rec = cache._read_record(sha)
        cache._write_record(sha, {**rec, "lastUsed": clock.now()})
    t.join(10)
    assert removed == [[]]
    assert cache.has(sha)


def test_stale_part_files_are_cleared(tmp_path: Path, server: Server) -> None:
    sha = server.publish("base.qcow2", _qcow2(tmp_path))
    cache = ImageCache(tmp_path / "cache")
    part = tmp_path / "cache" / f"{sha}.part"
    part.write_bytes(b"half a download from a crashed agent")
    assert cache.fetch(server.url("base.qcow2"), sha).exists()
    assert not part.exists()
    other = hashlib.sha256(b"other").hexdigest()
    stale = tmp_path / "cache" / f"{other}.part"
    stale.write_bytes(b"junk")
    assert cache.remove_unused({sha}, 0) == []
    assert not stale.exists()


def test_cached_file_without_record_is_verified_again(tmp_path: Path, server: Server) -> None:
    sha = server.publish("base.qcow2", _qcow2(tmp_path))
    cache = ImageCache(tmp_path / "cache")
    path = cache.fetch(server.url("base.qcow2"), sha)
    (tmp_path / "cache" / f"{sha}.json").unlink()
    assert cache.fetch(server.url("base.qcow2"), sha) == path
    assert server.hits["/base.qcow2"] == 1
    # Bytes that no longer match their name are thrown away.
    (tmp_path / "cache" / f"{sha}.json").unlink()
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.write(b"X")
    with pytest.raises(ImageRejected) as ei:
        cache.fetch(server.url("base.qcow2"), sha)
    assert ei.value.code == "Sha256Mismatch"
    assert not cache.has(sha)


def test_bad_arguments(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path / "cache")
    with pytest.raises(ValueError, match="sha256"):
        cache.fetch("http://127.0.0.1/a", "ABC")
    with pytest.raises(ValueError, match="sha256"):
        cache.path_for("../etc/passwd")
    with pytest.raises(ValueError, match="http"):
        cache.fetch("file:///etc/passwd", "0" * 64)


def test_redact_url_drops_credentials_query_and_fragment() -> None:
    assert (
        redact_url("https://user:pw@example.org:8443/a/b.qcow2?sig=x#frag")
        == "https://example.org:8443/a/b.qcow2"
    )
