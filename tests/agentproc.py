"""A real ``kvmss-agent serve`` process on qemu:///system for guest tests, with
its own bridge, subnet, ports and storage; and the steps every such process
of the tests goes through (start, wait until it answers, stop, remove the
domains it left)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import libvirt
import yaml

from bench.served import free_port
from hostagent.contract.client import AgentClient, AgentError
from hostagent.network import bridge
from kvmss.base.clock import SystemClock
from kvmss.base.waiting import wait_until

REPO = Path(__file__).resolve().parent.parent
AGENT_COMMAND = (sys.executable, "-m", "hostagent.daemon.cli", "serve")


def spawn_agent(
    config: Path, log: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``kvmss-agent serve ARGS --config CONFIG``, its output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [*AGENT_COMMAND, *args, "--config", str(config)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )


def wait_answering(
    proc: subprocess.Popen[bytes], client: AgentClient, log: Path, timeout: float = 60
) -> None:
    """Until the agent answers ``GET /v1/host``; its log's tail if it exits first."""

    def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited: {log.read_text()[-3000:]}")
        try:
            client.host()
        except AgentError:
            return False
        return True

    if not wait_until(SystemClock(), answers, timeout=timeout, interval=0.1):
        raise RuntimeError(f"agent did not answer within {timeout:.0f}s")


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; nothing when it has ended."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def remove_domains(marker: str, uri: str = "qemu:///system") -> None:
    """Destroy and undefine every domain whose XML names ``marker`` (a path)."""
    conn = libvirt.open(uri)
    try:
        for dom in conn.listAllDomains(0):
            if marker in dom.XMLDesc(0):
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
    finally:
        conn.close()


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

    def spawn(self, env: Mapping[str, str] | None = None) -> None:
        """Start the process without waiting for it."""
        self.proc = spawn_agent(self.config, self.log, env=env)

    def start(self, env: dict[str, str] | None = None) -> None:
        self.spawn(env)
        assert self.proc is not None
        wait_answering(self.proc, self.client, self.log)

    def wait_exit(self, timeout: float = 120) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc)

    def cleanup(self) -> None:
        """Remove every domain this agent made and its bridge."""
        self.stop()
        remove_domains(str(self.root))
        bridge.delete_bridge(self.bridge)
