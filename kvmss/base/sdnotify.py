"""systemd's service notification protocol (``sd_notify(3)``) without libsystemd.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a filesystem path, or
``@name`` for the abstract namespace) and, with ``WatchdogSec=``,
``WATCHDOG_USEC`` and ``WATCHDOG_PID``. The daemon sends newline-separated
``KEY=value`` assignments in one datagram: ``READY=1`` once it serves (so units
ordered after it start only then), ``STATUS=...`` for ``systemctl status``,
``STOPPING=1`` when it begins to shut down, and ``WATCHDOG=1`` at least once
per watchdog timeout, or systemd kills and restarts it.

Outside systemd (no ``NOTIFY_SOCKET``: the lab, tests, a shell) every call is
a no-op. A notification that cannot be delivered is logged, never raised: the
daemon keeps serving whatever happened to its supervisor's socket.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

__all__ = [
    "Notifier",
    "feed_watchdog",
    "socket_address",
    "watchdog_interval",
    "watchdog_timeout",
]


def socket_address(value: str | None) -> str | None:
    """The ``AF_UNIX`` address named by a ``NOTIFY_SOCKET`` value: a path as
    is, ``@name`` as the abstract name ``\\0name``; None when unset or of a
    kind this client does not speak (``vsock:``, a relative path)."""
    if not value:
        return None
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET %r: not a path or @abstract name; not notifying systemd", value)
    return None


def watchdog_timeout(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """The watchdog timeout in seconds when systemd watches this process
    (``WATCHDOG_USEC``, and ``WATCHDOG_PID`` naming us when set), else None.

    The PID check is what keeps a child that inherited the environment (or a
    daemon started by a watched process) from believing it is watched."""
    env = os.environ if environ is None else environ
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner:
        try:
            owner_pid = int(owner)
        except ValueError:
            log.warning("WATCHDOG_PID %r: not a process id; watchdog ignored", owner)
            return None
        if owner_pid != (os.getpid() if pid is None else pid):
            return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("WATCHDOG_USEC %r: not a number of microseconds; watchdog ignored", raw)
        return None
    if usec <= 0:
        log.warning("WATCHDOG_USEC %r: must be positive; watchdog ignored", raw)
        return None
    return usec / 1_000_000


def watchdog_interval(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """How often to send ``WATCHDOG=1``: half the timeout, as ``sd_watchdog_enabled(3)``
    recommends, so one late pet does not cost a restart; None when unwatched."""
    timeout = watchdog_timeout(environ, pid)
    return None if timeout is None else timeout / 2


class Notifier:
    """Sends notifications to one socket; ``address`` None makes it a no-op.

    A socket is opened per message (as libsystemd does): notifications are
    rare, and no descriptor is shared between the threads that may send."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._failed: set[int] = set()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if environ is None else environ
        return cls(socket_address(env.get("NOTIFY_SOCKET")))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def __repr__(self) -> str:
        shown = None if self.address is None else self.address.replace("\0", "@", 1)
        return f"Notifier({shown!r})"

    def notify(self, **fields: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; True when delivered. Values
        are made single-line (the protocol is line-based)."""
        if self.address is None or not fields:
            return False
        lines = [f"{key}={' '.join(str(v).splitlines())}" for key, v in fields.items()]
        data = ("\n".join(lines) + "\n").encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                # Never block the caller (often the event loop) on a full queue.
                s.sendto(data, socket.MSG_DONTWAIT, self.address)
        except OSError as e:
            code = e.errno or 0
            if code not in self._failed:  # once per kind of failure, not per pet
                self._failed.add(code)
                why = errno.errorcode.get(code, str(code))
                log.warning("cannot notify systemd (%s): %s", ", ".join(fields), why)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify(READY="1", **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        return self.notify(STATUS=text)

    def stopping(self, status: str | None = None) -> bool:
        return self.notify(STOPPING="1", **({"STATUS": status} if status else {}))

    def watchdog(self) -> bool:
        return self.notify(WATCHDOG="1")


async def feed_watchdog(
    notifier: Notifier, interval: float, trouble: Callable[[], str | None]
) -> None:
    """Send ``WATCHDOG=1`` every ``interval`` seconds while ``trouble()`` says
    nothing is wrong (returns None); runs until cancelled.

    It runs as a task on the serving event loop on purpose: a loop blocked or
    spinning in one callback stops the pets, and systemd restarts the daemon,
    which a feeder thread would hide. When ``trouble()`` names a problem the
    pets stop too (logged once per episode) and systemd acts on the timeout."""
    quiet = True
    while True:
        reason = trouble()
        if reason is None:
            notifier.watchdog()
            quiet = True
        elif quiet:
            log.warning("not petting the systemd watchdog: %s", reason)
            quiet = False
        await asyncio.sleep(interval)
