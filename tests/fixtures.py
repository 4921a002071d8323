"""Test helpers shared by the suites: a storage root libvirt's QEMU user can
traverse, a real HTTP file server on loopback, and small real qcow2 images."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kvmss.base import qemuimg
from tests.leftovers import mark_owner

TEST_ROOT = Path(os.environ.get("KVMSS_TEST_ROOT", "/var/tmp/kvmss-tests"))


@contextmanager
def storage_root(prefix: str = "t") -> Iterator[Path]:
    TEST_ROOT.mkdir(parents=True, exist_ok=True)
    os.chmod(TEST_ROOT, 0o755)
    d = TEST_ROOT / f"{prefix}-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    os.chmod(d, 0o755)
    mark_owner(d)  # a killed run's leftovers are swept by the next (tests.leftovers)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


class FileServer:
    """Serves a directory over HTTP on 127.0.0.1 and counts GETs per path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hits: dict[str, int] = {}
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a: object, **kw: object) -> None:
                super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

            def do_GET(self) -> None:
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                super().do_GET()

            def log_message(self, *_a: object) -> None:
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        port = self.httpd.server_address[1]
        return f"http://127.0.0.1:{port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_qcow2(path: Path, marker: bytes, size_mib: int = 8) -> str:
    """A small real qcow2 whose first bytes are ``marker``; returns its sha256."""
    raw = path.with_suffix(".raw")
    with raw.open("wb") as f:
        f.truncate(size_mib << 20)
        f.seek(0)
        f.write(marker)
    qemuimg.convert(raw, path, src_format="raw", dst_format="qcow2")
    raw.unlink()
    return sha256_file(path)
