"""A real ``kvmss-agent serve`` process on qemu:///system for guest tests, with
its own bridge, subnet, ports and storage, plus the tiny images served over
HTTP the way the controller serves them."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench.served import free_port
from hostagent.contract.client import AgentClient, AgentError

REPO = Path(__file__).resolve().parent.parent


class AgentProcess:
    def __init__(self, root: Path, name: str = "host-t", shutdown_timeout: float = 20) -> None:
        self.root = root
        self.name = name
        self.token = "test-agent-token-" + os.urandom(8).hex()
        self.port = free_port()
        tag = os.urandom(3).hex()
        self.bridge = f"kvt{tag}"
        self.subnet = f"10.{random.randint(160, 250)}.{random.randint(0, 255)}.0/24"
        self.config = root / "agent.yaml"
        self.log = root / "agent.log"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "name": name,
                    "listen": f"127.0.0.1:{self.port}",
                    "token": self.token,
                    "libvirt_uri": "qemu:///system",
                    "storage_dir": str(root / "storage"),
                    "bridge": {"name": self.bridge, "subnet": self.subnet},
                    "guest_port": free_port(),
                    "shutdown_timeout": shutdown_timeout,
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = AgentClient(f"http://127.0.0.1:{self.port}", self.token, timeout=600)

    def start(self, env: dict[str, str] | None = None) -> None:
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hostagent.daemon.cli",
                    "serve",
                    "--config",
                    str(self.config),
                ],
                cwd=REPO,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited: {self.log.read_text()[-3000:]}")
            try:
                self.client.host()
                return
            except AgentError:
                time.sleep(0.1)
        raise RuntimeError("agent did not answer within 60s")

    def wait_exit(self, timeout: float = 120) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def cleanup(self) -> None:
        """Remove every domain this agent made and its bridge."""
        self.stop()
        import libvirt

        from hostagent.network import bridge

        conn = libvirt.open("qemu:///system")
        try:
            prefix = str(self.root)
            for dom in conn.listAllDomains(0):
                if prefix in dom.XMLDesc(0):
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()
        finally:
            conn.close()
        bridge.delete_bridge(self.bridge)
