"""One SSH connection to a host being joined (paramiko): host keys checked,
never trusted blindly; commands run with their exit status checked; files
uploaded by SFTP.

Host keys come from a known_hosts file or from one fingerprint the user
gives (``SHA256:...``, as ``ssh-keygen -lf`` prints it). An unknown or
different key refuses the connection with the fingerprint the server offered
and how to accept it: as ``ssh`` does with StrictHostKeyChecking=yes, and
unlike paramiko's AutoAddPolicy, which would trust whoever answers first.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import paramiko

from kvmss.base.clock import Clock, SystemClock
from kvmss.base.waiting import wait_for

CONNECT_TIMEOUT = 15.0
# How much of a command's output is kept (its tail) for error messages.
_KEEP = 64 * 1024
# How long a command's output loop sleeps when nothing has come.
_IDLE_SECONDS = 0.02
# Reads (32 KiB each at most) between two looks at the clock.
_READS_PER_TRY = 32
_TARGET_RE = re.compile(r"^(?P<user>[A-Za-z_][A-Za-z0-9_.-]{0,31})@(?P<host>[A-Za-z0-9.:%-]+)$")
_FINGERPRINT_RE = re.compile(r"^SHA256:(?P<b64>[A-Za-z0-9+/]{43})=?$")


class SshError(Exception):
    """The connection, a command or an upload failed; the message says which
    and why, in one line."""


class HostKeyRefused(SshError):
    """The server's host key is unknown or is not the expected one."""

    def __init__(self, message: str, offered: str) -> None:
        super().__init__(message)
        self.offered = offered


class RemoteCommandError(SshError):
    def __init__(self, what: str, status: int, output: str) -> None:
        tail = " | ".join(line for line in output.strip().splitlines()[-6:] if line.strip())
        detail = f": {tail}" if tail else ""
        super().__init__(f"{what} failed (exit status {status}){detail}")
        self.status = status
        self.output = output


@dataclass(frozen=True)
class SshTarget:
    user: str
    host: str
    port: int = 22

    @classmethod
    def parse(cls, text: str, port: int = 22) -> SshTarget:
        """``user@address``; the address is a host name or an IP address."""
        m = _TARGET_RE.fullmatch(text)
        if m is None:
            raise ValueError(f"{text!r}: must be USER@ADDRESS, e.g. root@192.0.2.10")
        if not 0 < port < 65536:
            raise ValueError(f"{port}: not a TCP port")
        return cls(m["user"], m["host"].strip("[]"), port)

    @property
    def known_hosts_name(self) -> str:
        """The name OpenSSH files this host under in known_hosts."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class HostKeyCheck:
    """Where the expected host key comes from: a known_hosts file, or (when
    ``fingerprint`` is set) that fingerprint alone."""

    known_hosts: Path = field(default_factory=lambda: Path.home() / ".ssh" / "known_hosts")
    fingerprint: str | None = None

    def __post_init__(self) -> None:
        if self.fingerprint is not None:
            object.__setattr__(self, "fingerprint", normalize_fingerprint(self.fingerprint))


def normalize_fingerprint(text: str) -> str:
    """``SHA256:<43 base64 characters>`` (a trailing ``=`` dropped)."""
    m = _FINGERPRINT_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(
            f"{text!r}: must be SHA256:<43 base64 characters>, as printed by ssh-keygen -lf"
        )
    return f"SHA256:{m['b64']}"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of ``key`` (``ssh-keygen -lf`` format)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _offered(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {fingerprint(key)}"


class _CheckPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko only for a key it does not know: accept it when it
    has the expected fingerprint, refuse it otherwise."""

    def __init__(self, target: SshTarget, check: HostKeyCheck) -> None:
        self.target = target
        self.check = check

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        got = fingerprint(key)
        t = self.target
        if self.check.fingerprint is None:
            scan = f"ssh-keyscan -p {t.port} {t.host} >> {self.check.known_hosts}"
            raise HostKeyRefused(
                f"ssh {t}: unknown host key {_offered(key)}: {t.known_hosts_name} is not in "
                f"{self.check.known_hosts}; once you have checked it is the host's key, accept it "
                f"with --host-key-fingerprint {got} or add it with: {scan}",
                got,
            )
        if got != self.check.fingerprint:
            raise HostKeyRefused(
                f"ssh {t}: host key mismatch: the server offered {_offered(key)}, "
                f"--host-key-fingerprint is {self.check.fingerprint} (a different host, or someone "
                "in between; if the host has several keys, give the fingerprint of this type)",
                got,
            )
        client.get_host_keys().add(hostname, key.get_name(), key)


@dataclass
class CommandResult:
    status: int
    stdout: str
    stderr: str


class SshSession:
    """A connected client; ``run`` and ``put_*`` raise :class:`SshError`."""

    def __init__(
        self, target: SshTarget, client: paramiko.SSHClient, clock: Clock | None = None
    ) -> None:
        self.target = target
        self._client = client
        self._clock = clock or SystemClock()
        self._sftp: paramiko.SFTPClient | None = None
        transport = client.get_transport()
        peer = transport.getpeername() if transport is not None else (target.host,)
        # The address the connection reached (a host name resolved).
        self.peer_address: str = str(peer[0]).split("%")[0]
        self.is_root = self.run("id -u", what="id -u").stdout.strip() == "0"

    @classmethod
    def connect(
        cls,
        target: SshTarget,
        check: HostKeyCheck,
        key_file: Path | None = None,
        timeout: float = CONNECT_TIMEOUT,
        clock: Clock | None = None,
    ) -> SshSession:
        """Connect with key authentication: ``key_file`` alone when given,
        else the ssh agent and the default keys in ~/.ssh."""
        client = paramiko.SSHClient()
        try:
            if check.fingerprint is None and check.known_hosts.exists():
                client.load_host_keys(str(check.known_hosts))
            client.set_missing_host_key_policy(_CheckPolicy(target, check))
            client.connect(
                target.host,
                port=target.port,
                username=target.user,
                key_filename=str(key_file) if key_file is not None else None,
                allow_agent=key_file is None,
                look_for_keys=key_file is None,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
            )
            return cls(target, client, clock)
        except BaseException as e:
            client.close()
            if isinstance(e, SshError):
                raise
            if isinstance(e, Exception):
                raise SshError(_connect_reason(target, check, key_file, e)) from None
            raise

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self._client.close()

    def __enter__(self) -> SshSession:
        return self

    def __exit__(
        self,
        _t: type[BaseException] | None,
        _e: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()

    def privileged(self, command: str) -> str:
        """``command`` as root: as is when logged in as root, else through
        ``sudo -n`` (which fails at once rather than ask for a password)."""
        return command if self.is_root else f"sudo -n -- sh -c {shlex.quote(command)}"

    def run(
        self, command: str, *, what: str, timeout: float = 120.0, check: bool = True
    ) -> CommandResult:
        """Run ``command`` through the login shell; ``what`` names the step in
        errors. Output is read as it comes (no pipe fills up) and only its tail
        is kept."""
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError(f"ssh {self.target}: {what}: the connection is closed")
        try:
            chan = transport.open_session(timeout=CONNECT_TIMEOUT)
            chan.exec_command(command)
            out, err = bytearray(), bytearray()
            status = wait_for(
                self._clock,
                lambda: _read_some(chan, out, err),
                timeout=timeout,
                interval=_IDLE_SECONDS,
            )
            chan.close()
        except (paramiko.SSHException, OSError) as e:
            raise SshError(f"ssh {self.target}: {what}: {e or type(e).__name__}") from None
        if status is None:
            raise SshError(f"ssh {self.target}: {what}: no end after {timeout:.0f} s")
        result = CommandResult(status, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and status != 0:
            raise RemoteCommandError(
                f"ssh {self.target}: {what}", status, result.stderr or result.stdout
            )
        return result

    def _sftp_client(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = self._client.open_sftp()
            except (paramiko.SSHException, OSError) as e:
                raise SshError(f"ssh {self.target}: cannot start SFTP: {e}") from None
        return self._sftp

    def put_file(self, local: Path, remote: str, mode: int = 0o644) -> None:
        """Upload ``local`` to ``remote`` (a path the SSH user can write)."""
        sftp = self._sftp_client()
        try:
            sftp.put(str(local), remote)
            sftp.chmod(remote, mode)
        except (paramiko.SSHException, OSError) as e:
            raise SshError(f"ssh {self.target}: upload {local.name} to {remote}: {e}") from None

    def put_bytes(self, data: bytes, remote: str, mode: int = 0o600) -> None:
        """Write ``data`` to ``remote``; the mode is set before any byte is
        written, so a secret is never readable by others, not even briefly."""
        sftp = self._sftp_client()
        try:
            with sftp.open(remote, "wb") as f:
                f.chmod(mode)
                f.write(data)
        except (paramiko.SSHException, OSError) as e:
            # Name the file, never its content.
            raise SshError(f"ssh {self.target}: write {remote}: {e}") from None


def _read_some(chan: paramiko.Channel, out: bytearray, err: bytearray) -> int | None:
    """Take what output has come (keeping only its tail); the exit status
    once the command has ended and all its output is read."""
    for _ in range(_READS_PER_TRY):
        if not (chan.recv_ready() or chan.recv_stderr_ready()):
            break
        if chan.recv_ready():
            out += chan.recv(32768)
        if chan.recv_stderr_ready():
            err += chan.recv_stderr(32768)
        del out[:-_KEEP], err[:-_KEEP]
    # Output sent before the exit status is buffered by then.
    if chan.exit_status_ready() and not (chan.recv_ready() or chan.recv_stderr_ready()):
        return chan.recv_exit_status()
    return None


def _connect_reason(
    target: SshTarget, check: HostKeyCheck, key_file: Path | None, e: Exception
) -> str:
    """One line for a failed connection, naming what to check."""
    where = f"ssh {target}"
    if isinstance(e, paramiko.BadHostKeyException):
        file = check.known_hosts
        return (
            f"{where}: host key mismatch: the server offered {_offered(e.key)}, {file} has "
            f"{fingerprint(e.expected_key)} for {target.known_hosts_name} (a different host, or "
            f"someone in between; if the host was reinstalled: ssh-keygen -R "
            f"'{target.known_hosts_name}' -f {file})"
        )
    if isinstance(e, paramiko.PasswordRequiredException):
        return f"{where}: the key {key_file} is encrypted: load it into ssh-agent and omit --key"
    if isinstance(e, paramiko.AuthenticationException):
        keys = f"the key {key_file}" if key_file else "the ssh agent's and ~/.ssh's default keys"
        return f"{where}: authentication failed with {keys}"
    if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
        return f"{where}: cannot connect: connection refused"
    if isinstance(e, socket.timeout | TimeoutError):
        return f"{where}: cannot connect: timed out"
    if isinstance(e, socket.gaierror):
        return f"{where}: cannot connect: host name not resolved"
    if isinstance(e, OSError):
        return f"{where}: cannot connect: {e.strerror or e}"
    return f"{where}: {e or type(e).__name__}"
