"""A "remote host" for the SSH join tests: a real ``/usr/sbin/sshd`` in a
network namespace of its own, reached over a veth pair.

The namespace shares this machine's filesystem and libvirtd, so what a join
installs lands here too (the tests point it under /var/tmp/kvmss-tests), and
everything started over SSH (the agent, its bridge) lives in the namespace:
cleanup kills the namespace's processes by pid and deletes the namespace,
which takes the veth pair and the bridge with it.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from kvmss.base.clock import SystemClock
from kvmss.base.waiting import wait_until

SSHD = "/usr/sbin/sshd"
SSH_PORT = 2222
# Veth pairs come from 10.254.0.0/16, /30 each (no other test uses it).
_VETH_NET = "10.254"


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=60)


def keygen(path: Path, comment: str) -> str:
    """A new ed25519 key pair at ``path``; its public key line."""
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))
    return path.with_suffix(".pub").read_text().strip()


def ssh_keygen_fingerprint(pub: Path) -> str:
    """The SHA256 fingerprint as OpenSSH's own ``ssh-keygen -lf`` prints it."""
    return run("ssh-keygen", "-E", "sha256", "-lf", str(pub)).stdout.split()[1]


@dataclass
class SshHost:
    netns: str
    address: str  # inside the namespace; sshd and the agent listen here
    port: int
    dir: Path
    client_key: Path
    host_key_line: str  # "ssh-ed25519 AAAA..."
    fingerprint: str
    sshd_log: Path

    @property
    def target(self) -> str:
        return f"root@{self.address}"

    def known_hosts(self, path: Path, key_line: str | None = None) -> Path:
        """A known_hosts file naming this host (with ``key_line``, another key)."""
        path.write_text(f"[{self.address}]:{self.port} {key_line or self.host_key_line}\n")
        return path

    def pids(self) -> list[int]:
        out = run("ip", "netns", "pids", self.netns, check=False).stdout
        return [int(p) for p in out.split()]

    def exec(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", self.netns, *cmd, check=check)


def port_open(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((address, port)) == 0


def _kill_all(host: SshHost) -> None:
    """TERM, then KILL, every process in the namespace (ours alone)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = host.pids()
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, sig)
        wait_until(SystemClock(), lambda: not host.pids(), timeout=10, interval=0.1)


@contextmanager
def ssh_host(root: Path) -> Iterator[SshHost]:
    """sshd in a fresh namespace, keys and configuration under ``root``."""
    tag = os.urandom(3).hex()
    netns, outer, inner = f"kvmss-ssh-{tag}", f"kvs{tag}o", f"kvs{tag}i"
    base = f"{_VETH_NET}.{random.randint(0, 255)}.{random.randrange(0, 256, 4)}"
    prefix, last = base.rsplit(".", 1)
    outer_ip, inner_ip = f"{prefix}.{int(last) + 1}", f"{prefix}.{int(last) + 2}"
    d = root / "sshd"
    d.mkdir()
    host = SshHost(
        netns=netns,
        address=inner_ip,
        port=SSH_PORT,
        dir=d,
        client_key=d / "client_ed25519",
        host_key_line="",
        fingerprint="",
        sshd_log=d / "sshd.log",
    )
    proc: subprocess.Popen[bytes] | None = None
    try:
        run("ip", "netns", "add", netns)
        run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        run("ip", "link", "set", inner, "netns", netns)
        run("ip", "addr", "add", f"{outer_ip}/30", "dev", outer)
        run("ip", "link", "set", outer, "up")
        host.exec("ip", "addr", "add", f"{inner_ip}/30", "dev", inner)
        host.exec("ip", "link", "set", inner, "up")
        host.exec("ip", "link", "set", "lo", "up")

        host_pub = keygen(d / "host_ed25519", "kvmss-test-host")
        host.host_key_line = " ".join(host_pub.split()[:2])
        host.fingerprint = ssh_keygen_fingerprint(d / "host_ed25519.pub")
        client_pub = keygen(host.client_key, "kvmss-test-client")
        (d / "authorized_keys").write_text(client_pub + "\n")
        config = d / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {SSH_PORT}",
                    f"ListenAddress {inner_ip}",
                    f"HostKey {d / 'host_ed25519'}",
                    f"PidFile {d / 'sshd.pid'}",
                    f"AuthorizedKeysFile {d / 'authorized_keys'}",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "Subsystem sftp internal-sftp",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation
        with host.sshd_log.open("ab") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", netns, SSHD, "-D", "-e", "-f", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started = wait_until(
            SystemClock(),
            lambda: port_open(inner_ip, SSH_PORT),
            timeout=15,
            interval=0.05,
            stop=lambda: proc.poll() is not None,
        )
        if not started:
            raise RuntimeError(f"sshd did not start: {host.sshd_log.read_text()[-2000:]}")
        yield host
    finally:
        _kill_all(host)
        if proc is not None:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        run("ip", "netns", "del", netns, check=False)
        run("ip", "link", "del", outer, check=False)
