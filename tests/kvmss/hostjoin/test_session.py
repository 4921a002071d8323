"""kvmss.hostjoin.session: the parsers of targets and fingerprints, and a
command's output loop on the injected clock (a fake channel stands in for
paramiko's; the real one is driven by test_ssh.py)."""

from __future__ import annotations

from typing import Any, cast

import paramiko
import pytest

from kvmss.base.clock import FakeClock
from kvmss.hostjoin.session import SshError, SshSession, SshTarget, normalize_fingerprint


class FakeChannel:
    """Gives ``chunks`` of stdout one per read, then ends with ``status``
    (never, when ``status`` is None)."""

    def __init__(self, chunks: list[bytes], status: int | None) -> None:
        self.chunks = list(chunks)
        self.status = status
        self.closed = False

    def exec_command(self, _command: str) -> None:
        return None

    def recv_ready(self) -> bool:
        return bool(self.chunks)

    def recv(self, _n: int) -> bytes:
        return self.chunks.pop(0)

    def recv_stderr_ready(self) -> bool:
        return False

    def recv_stderr(self, _n: int) -> bytes:
        return b""

    def exit_status_ready(self) -> bool:
        return self.status is not None and not self.chunks

    def recv_exit_status(self) -> int:
        assert self.status is not None
        return self.status

    def close(self) -> None:
        self.closed = True


class FakeClient:
    """Answers ``id -u`` with 0, then hands out ``channels`` in order."""

    def __init__(self, *channels: FakeChannel) -> None:
        self.channels = [FakeChannel([b"0\n"], 0), *channels]

    def get_transport(self) -> FakeClient:
        return self

    def getpeername(self) -> tuple[str, int]:
        return ("192.0.2.10", 22)

    def is_active(self) -> bool:
        return True

    def open_session(self, timeout: float) -> FakeChannel:
        return self.channels.pop(0)


def session(*channels: FakeChannel, clock: FakeClock) -> SshSession:
    client = cast(paramiko.SSHClient, cast(Any, FakeClient(*channels)))
    return SshSession(SshTarget("root", "192.0.2.10"), client, clock)


def test_output_is_read_to_the_end_and_the_status_checked() -> None:
    clock = FakeClock()
    ok = FakeChannel([b"one\n", b"two\n"], 0)
    failing = FakeChannel([b"it broke\n"], 3)
    ssh = session(ok, failing, clock=clock)
    assert ssh.is_root and ssh.peer_address == "192.0.2.10"
    result = ssh.run("echo", what="echo")
    assert (result.status, result.stdout) == (0, "one\ntwo\n") and ok.closed
    with pytest.raises(SshError, match=r"ssh root@192.0.2.10:22: boom failed \(exit status 3\)"):
        ssh.run("false", what="boom")


def test_a_command_without_end_times_out_on_the_clock() -> None:
    clock = FakeClock()
    endless = FakeChannel([b"working\n"], None)
    ssh = session(endless, clock=clock)
    with pytest.raises(SshError, match=r"install-kvmss\.sh: no end after 10 s"):
        ssh.run("sleep infinity", what="install-kvmss.sh", timeout=10)
    assert clock.monotonic() == pytest.approx(10)  # waited on the clock, not for real
    assert endless.closed


def test_ssh_target_and_fingerprint_parsing() -> None:
    t = SshTarget.parse("root@192.0.2.10", 2222)
    assert (t.user, t.host, t.port) == ("root", "192.0.2.10", 2222)
    assert t.known_hosts_name == "[192.0.2.10]:2222"
    assert SshTarget.parse("ops@host-1.example").known_hosts_name == "host-1.example"
    for bad in ("192.0.2.10", "root@", "a b@host", "root@host;reboot"):
        with pytest.raises(ValueError, match="USER@ADDRESS"):
            SshTarget.parse(bad)
    fp = "SHA256:" + "a1/+" * 10 + "xyz"
    assert normalize_fingerprint(fp + "=") == fp
    for bad in ("MD5:16:27:ac", "SHA256:short", "sha256:" + "a" * 43):
        with pytest.raises(ValueError, match="SHA256:"):
            normalize_fingerprint(bad)
