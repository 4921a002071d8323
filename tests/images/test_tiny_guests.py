"""The tiny base image booted by QEMU: cloud-init-like configuration from its
seed, user data once per instance, reports, power-off (the ``guest`` tests;
what the build writes is in test_tiny)."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.served import free_port
from images.tiny import build as tiny_build
from images.tiny.manifest import Manifest
from kvmss.base import qemuimg
from tests.images.test_tiny import _scratch

# --- booted guests ---------------------------------------------------------


class Console:
    """A QEMU process whose serial console (stdout) is read line by line."""

    def __init__(self, cmd: list[str]) -> None:
        self.started = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        buf = b""
        while chunk := os.read(self.proc.stdout.fileno(), 4096):
            buf += chunk
            *done, buf = buf.split(b"\n")
            with self._cond:
                for raw in done:
                    line = raw.decode(errors="replace").rstrip("\r")
                    self.lines.append((time.monotonic() - self.started, line))
                self._cond.notify_all()
        with self._cond:
            if buf:
                self.lines.append((time.monotonic() - self.started, buf.decode(errors="replace")))
            self._cond.notify_all()

    def text(self) -> str:
        with self._cond:
            return "\n".join(line for _, line in self.lines)

    def wait_for(self, needle: str, timeout: float) -> float:
        """Seconds since start at which a console line containing ``needle`` appeared."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for at, line in self.lines:
                    if needle in line:
                        return at
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    tail = "\n".join(line for _, line in self.lines[-40:])
                    raise AssertionError(f"no console line with {needle!r}; console:\n{tail}")
                self._cond.wait(min(left, 0.5))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _qmp(sock: Path, command: str) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(sock))
        f = s.makefile("rwb")
        json.loads(f.readline())  # greeting
        for cmd in ("qmp_capabilities", command):
            f.write(json.dumps({"execute": cmd}).encode() + b"\n")
            f.flush()
            while True:
                reply = json.loads(f.readline())
                if "error" in reply:
                    raise AssertionError(f"QMP {cmd}: {reply['error']}")
                if "return" in reply:
                    break


@dataclass
class Reports:
    """An HTTP server on the host's loopback that records what guests POST."""

    received: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0


@pytest.fixture
def reports() -> Iterator[Reports]:
    rep = Reports()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            rep.received.append((self.path, dict(self.headers.items()), body))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rep.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rep
    server.shutdown()
    server.server_close()


MAC_UNUSED = "52:54:00:00:00:01"
MAC_LAN = "52:54:00:ab:cd:ef"

USER_DATA = """#!/bin/sh
set -e
echo "marker $(cat /etc/os-version) {iid}" >> /data/marker
sed 's/^/kvmss-test: data: /' /data/marker
echo "kvmss-test: base64 $(printf hello | base64)"
mkdir -p /www
echo ok > /www/health.txt
busybox httpd -p 8080 -h /www
wget -q -O /dev/null --header 'Content-Type: application/json' \\
  --header 'Authorization: Bearer tok-{iid}' \\
  --post-data '{{"instance": "{iid}", "status": "Succeeded"}}' \\
  http://10.0.2.2:{port}/report
echo "kvmss-test: posted"
"""


def _seed(directory: Path, iid: str, report_port: int) -> Path:
    src = directory / f"seed-{iid}"
    src.mkdir()
    (src / "meta-data").write_text(yaml.safe_dump({"instance-id": iid, "local-hostname": "tiny-0"}))
    network = {
        "version": 2,
        "ethernets": {
            "lan": {
                "match": {"macaddress": MAC_LAN},
                "set-name": "lan0",
                "addresses": ["10.0.2.15/24"],
                "routes": [{"to": "default", "via": "10.0.2.2"}],
                "nameservers": {"addresses": ["10.0.2.3"]},
            }
        },
    }
    (src / "network-config").write_text(yaml.safe_dump(network))
    (src / "user-data").write_text(USER_DATA.format(iid=iid, port=report_port))
    iso = directory / f"seed-{iid}.iso"
    subprocess.run(
        [
            "xorriso",
            "-as",
            "mkisofs",
            "-quiet",
            "-V",
            "cidata",
            "-J",
            "-r",
            "-o",
            str(iso),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    return iso


@dataclass
class Vm:
    directory: Path
    manifest: Manifest
    image_dir: Path
    overlay: Path
    data: Path
    spare: Path
    http_port: int

    def start(self, seed: Path) -> Console:
        qmp = self.directory / "qmp.sock"
        qmp.unlink(missing_ok=True)
        m = self.manifest
        cmd = [
            "qemu-system-x86_64",
            "-machine", "pc", "-accel", "tcg", "-m", "256", "-nographic", "-no-reboot",
            "-kernel", str(self.image_dir / m.kernel.file),
            "-initrd", str(self.image_dir / m.initrd.file),
            "-append", m.cmdline,
            "-drive", f"file={self.overlay},if=virtio,format=qcow2",
            "-drive", f"file={self.data},if=virtio,format=raw",
            "-drive", f"file={self.spare},if=virtio,format=raw",
            "-device", "ahci,id=ahci",
            "-drive", f"if=none,id=cd,file={seed},media=cdrom,readonly=on,format=raw",
            "-device", "ide-cd,bus=ahci.0,drive=cd",
            "-netdev", "user,id=n0,restrict=on",
            "-device", f"virtio-net-pci,netdev=n0,mac={MAC_UNUSED}",
            "-netdev", f"user,id=n1,hostfwd=tcp:127.0.0.1:{self.http_port}-:8080",
            "-device", f"virtio-net-pci,netdev=n1,mac={MAC_LAN}",
            "-qmp", f"unix:{qmp},server=on,wait=off",
        ]  # fmt: skip
        return Console(cmd)

    def power_down(self, console: Console) -> float:
        """Press the ACPI power button; seconds until QEMU exited."""
        pressed = time.monotonic()
        _qmp(self.directory / "qmp.sock", "system_powerdown")
        try:
            console.proc.wait(30)
        except subprocess.TimeoutExpired:
            console.kill()
            raise AssertionError(
                "guest did not power off within 30 s:\n" + console.text()
            ) from None
        return time.monotonic() - pressed


@pytest.fixture(scope="module")
def guest_image() -> Iterator[tuple[Path, Manifest]]:
    """Version 7 of the tiny image, built once for the module's guests (each
    boots its own overlay of it)."""
    d = _scratch("tiny-image-")
    image_dir = d / "image"
    yield image_dir, tiny_build.build("7", image_dir)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def vm(guest_image: tuple[Path, Manifest]) -> Iterator[Vm]:
    image_dir, manifest = guest_image
    d = _scratch("tiny-guest-")
    overlay = d / "os.qcow2"
    qemuimg.create_overlay(overlay, image_dir / manifest.disk.file)
    data = d / "data.raw"
    spare = d / "spare.raw"
    qemuimg.create(data, 64 << 20, "raw")
    qemuimg.create(spare, 64 << 20, "raw")
    yield Vm(d, manifest, image_dir, overlay, data, spare, free_port())
    shutil.rmtree(d, ignore_errors=True)


def _get(url: str, timeout: float) -> bytes:
    """GET ``url``, retrying while the guest's server is not up yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                body: bytes = resp.read()
                return body
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


BOOT_TIMEOUT = 120


@pytest.mark.guest
def test_guest_boots_configures_runs_user_data_once_per_instance_and_powers_off(
    vm: Vm, reports: Reports
) -> None:
    timings: list[str] = []

    # 1. First boot: blank data disk, new instance.
    console = vm.start(_seed(vm.directory, "iid-1", reports.port))
    try:
        ready = console.wait_for("kvmss-tiny: ready", BOOT_TIMEOUT)
        timings.append(f"boot 1 ready at {ready:.1f} s")
        console.wait_for("kvmss-tiny: version 7", 0)
        console.wait_for("kvmss-tiny: hostname tiny-0", 0)
        console.wait_for("kvmss-tiny: network lan0 10.0.2.15/24", 0)
        console.wait_for("kvmss-tiny: data /dev/vdb formatted ext4", 0)
        console.wait_for("kvmss-tiny: data /dev/vdb mounted at /data", 0)
        console.wait_for("kvmss-tiny: user-data exit 0", 60)
        console.wait_for("kvmss-test: data: marker 7 iid-1", 0)
        console.wait_for("kvmss-test: base64 aGVsbG8=", 0)
        console.wait_for("kvmss-test: posted", 0)
        assert "user-data: already ran" not in console.text()
        # The guest's busybox wget posted JSON with our headers through the
        # configured interface and its default route.
        assert len(reports.received) == 1
        path, headers, body = reports.received[0]
        assert path == "/report"
        assert headers["Authorization"] == "Bearer tok-iid-1"
        assert headers["Content-Type"] == "application/json"
        assert json.loads(body) == {"instance": "iid-1", "status": "Succeeded"}
        # busybox httpd started by user-data answers on the forwarded port.
        assert _get(f"http://127.0.0.1:{vm.http_port}/health.txt", 30) == b"ok\n"
        took = vm.power_down(console)
        timings.append(f"power-off {took:.1f} s")
    finally:
        console.kill()
    assert console.proc.returncode == 0
    assert "kvmss-tiny: data unmounted" in console.text()

    # 2. Same overlay, same instance-id: user-data does not run again and
    # the data disk is mounted, not formatted.
    console = vm.start(vm.directory / "seed-iid-1.iso")
    try:
        ready = console.wait_for("kvmss-tiny: ready", BOOT_TIMEOUT)
        timings.append(f"boot 2 ready at {ready:.1f} s")
        console.wait_for("kvmss-tiny: user-data: already ran for instance iid-1", 0)
        console.wait_for("kvmss-tiny: data /dev/vdb mounted at /data", 0)
        took = vm.power_down(console)
        timings.append(f"power-off {took:.1f} s")
    finally:
        console.kill()
    text = console.text()
    assert "formatted" not in text
    assert "user-data: running" not in text and "user-data exit" not in text
    assert len(reports.received) == 1

    # 3. New instance-id (a reimage's new seed): user-data runs again and
    # finds what the first run left on /data.
    console = vm.start(_seed(vm.directory, "iid-2", reports.port))
    try:
        ready = console.wait_for("kvmss-tiny: ready", BOOT_TIMEOUT)
        timings.append(f"boot 3 ready at {ready:.1f} s")
        console.wait_for("kvmss-tiny: user-data exit 0", 60)
        console.wait_for("kvmss-test: data: marker 7 iid-1", 0)
        console.wait_for("kvmss-test: data: marker 7 iid-2", 0)
        took = vm.power_down(console)
        timings.append(f"power-off {took:.1f} s")
    finally:
        console.kill()
    assert "formatted" not in console.text()
    assert [json.loads(b)["instance"] for _, _, b in reports.received] == ["iid-1", "iid-2"]

    # Only the first data disk is ever touched.
    with vm.spare.open("rb") as f:
        while chunk := f.read(1 << 20):
            assert not chunk.strip(b"\0"), "the second data disk was written to"
    print("\n" + "; ".join(timings))


@pytest.mark.guest
def test_guest_without_seed_still_boots_and_powers_off(vm: Vm) -> None:
    empty = vm.directory / "empty"
    empty.mkdir()
    (empty / "README").write_text("not a seed\n")
    iso = vm.directory / "other.iso"
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-quiet", "-V", "other", "-o", str(iso), str(empty)],
        check=True,
        capture_output=True,
    )
    console = vm.start(iso)
    try:
        console.wait_for("kvmss-tiny: seed: no filesystem labelled cidata", BOOT_TIMEOUT)
        console.wait_for("kvmss-tiny: ready", 30)
        took = vm.power_down(console)
    finally:
        console.kill()
    assert took < 30
    assert "user-data" not in console.text()
