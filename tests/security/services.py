"""The real services of the security tests: a controller served in this
process that polls its agents often, and a ``kvmss-agent serve`` process
logging at DEBUG to a file, with a configuration of the test's choosing."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from bench.served import free_port
from hostagent.contract.client import AgentClient
from hostagent.guest.tokens import GuestTokens
from tests.agentproc import remove_domains, spawn_agent, stop_process, wait_answering
from tests.servedcontroller import ServedController
from tests.servedcontroller import served_controller as served


@contextmanager
def served_controller(
    root: Path, token: str, host: str = "127.0.0.1"
) -> Iterator[ServedController]:
    """A controller with its database and blobs under ``root``, listening on
    ``host``, polling its agents every 0.2 s."""
    with served(root, token, host, poll_seconds=0.2) as ctl:
        yield ctl


class AgentServe:
    """``kvmss-agent serve --log-level debug`` with its own configuration."""

    def __init__(self, root: Path, config: dict[str, Any], listen_host: str = "127.0.0.1") -> None:
        self.root = root
        self.storage = root / "storage"
        self.port = free_port()
        self.token: str = config["token"]
        self.log = root / "agent.log"
        self.config = root / "agent.yaml"
        self.settings = {
            "listen": f"{listen_host}:{self.port}",
            "storage_dir": str(self.storage),
            "guest_port": free_port(),
            "shutdown_timeout": 10,
            **config,
        }
        self.config.write_text(yaml.safe_dump(self.settings))
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = AgentClient(self.url, self.token, timeout=60)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def guest_port(self) -> int:
        return int(self.settings["guest_port"])

    def start(self) -> None:
        self.proc = spawn_agent(
            self.config, self.log, "--log-level", "debug", env={"PYTHONUNBUFFERED": "1"}
        )
        wait_answering(self.proc, self.client, self.log)

    def guest_token(self, instance: str) -> str:
        return GuestTokens(self.storage / "guest-secret").token(instance)

    def stop(self) -> None:
        stop_process(self.proc)

    def remove_domains(self) -> None:
        """Destroy and undefine every domain whose disks are under this agent's storage."""
        remove_domains(str(self.storage), str(self.settings["libvirt_uri"]))
