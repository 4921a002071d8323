"""Pointing a systemd unit file at other directories: the units in
``systemd/`` say /opt/kvmss, /etc/kvmss and /var/lib/kvmss; a host joined
with ``--prefix``, ``--config-dir`` or ``--state-dir`` needs its unit to say
those instead.

The unit is parsed into sections and ``Key=value`` lines, and only the values
of keys known to hold paths are rewritten, word by word: command lines
(``ExecStart=`` and the like), path lists (``ReadWritePaths=`` ...) and the
directories systemd creates under a fixed root (``StateDirectory=kvmss`` is
/var/lib/kvmss; moved elsewhere, it becomes ``ReadWritePaths=``). Comments,
other keys and untouched lines stay byte for byte.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

EXEC_KEYS = frozenset(
    {"ExecStart", "ExecStartPre", "ExecStartPost", "ExecCondition", "ExecReload", "ExecStop"}
    | {"ExecStopPost"}
)
PATH_KEYS = frozenset(
    {"WorkingDirectory", "RootDirectory", "PIDFile", "EnvironmentFile", "ReadWritePaths"}
    | {"ReadOnlyPaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths", "BindPaths"}
    | {"BindReadOnlyPaths", "ConditionPathExists", "AssertPathExists"}
)
# Directories systemd creates and names relative to a fixed root.
DIRECTORY_KEYS: Mapping[str, PurePosixPath] = {
    "StateDirectory": PurePosixPath("/var/lib"),
    "ConfigurationDirectory": PurePosixPath("/etc"),
    "LogsDirectory": PurePosixPath("/var/log"),
    "CacheDirectory": PurePosixPath("/var/cache"),
    "RuntimeDirectory": PurePosixPath("/run"),
}
WRITABLE_DIRECTORY_KEYS = frozenset(DIRECTORY_KEYS) - {"ConfigurationDirectory"}
# Characters a path may have to be written into a unit without quoting or
# escaping (no spaces, quotes, '%' specifiers or '$' variables).
SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9/._+-]*$")
_ASSIGNMENT_RE = re.compile(r"^(?P<key>[A-Za-z][A-Za-z0-9]*)\s*=\s*(?P<value>.*)$", re.DOTALL)
_EXEC_PREFIX = "@-:+!|"


@dataclass(frozen=True)
class Relocation:
    """Default directory -> the directory this host uses instead."""

    moves: Mapping[PurePosixPath, PurePosixPath]

    def path(self, text: str) -> str:
        """``text`` moved when it is one of the defaults or under one."""
        if not text.startswith("/"):
            return text
        p = PurePosixPath(text)
        for old, new in self.moves.items():
            if p == old or old in p.parents:
                return str(new / p.relative_to(old))
        return text

    def word(self, word: str) -> str:
        """A path, ``-/path``, ``--opt=/path`` or ``src:dst`` (bind paths)."""
        lead = word[: len(word) - len(word.lstrip(_EXEC_PREFIX))]
        body = word[len(lead) :]
        if "=" in body and not body.startswith("/"):
            opt, _, val = body.partition("=")
            return f"{lead}{opt}={self.path(val)}"
        return lead + ":".join(self.path(part) for part in body.split(":"))


def check_path(value: str, option: str) -> PurePosixPath:
    """An absolute, normalized path that can go into a unit as it is."""
    if not SAFE_PATH_RE.fullmatch(value) or "/../" in value + "/" or "//" in value:
        raise ValueError(
            f"{option} {value!r}: must be an absolute path of letters, digits and / . _ + -"
        )
    return PurePosixPath(value)


def retarget(text: str, relocation: Relocation) -> str:
    """``text`` (a unit file) with its paths moved by ``relocation``."""
    out: list[str] = []
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        # A value continues on the next line after a trailing backslash.
        start = i
        while lines[i].rstrip("\r\n").endswith("\\") and i + 1 < len(lines):
            i += 1
        chunk = lines[start : i + 1]
        i += 1
        logical = "".join(line.rstrip("\r\n")[:-1] + " " for line in chunk[:-1])
        logical += chunk[-1].rstrip("\r\n")
        new = _rewrite(logical.strip(), relocation)
        if new is None:
            out.extend(chunk)
        elif new:
            out.append(new + "\n")
    return "".join(out)


def _rewrite(line: str, relocation: Relocation) -> str | None:
    """The new line, "" to drop it, or None to keep it as it was."""
    if not line or line[0] in "#;[":
        return None
    m = _ASSIGNMENT_RE.fullmatch(line)
    if m is None:
        return None
    key, value = m["key"], m["value"]
    if key in DIRECTORY_KEYS:
        return _directories(key, value, relocation)
    if key not in EXEC_KEYS and key not in PATH_KEYS:
        return None
    try:
        words = shlex.split(value, comments=False, posix=True)
    except ValueError:
        return None  # quoting we cannot read: leave it alone
    moved = [relocation.word(w) for w in words]
    if moved == words:
        return None
    return f"{key}={' '.join(_quote(w) for w in moved)}"


def _directories(key: str, value: str, relocation: Relocation) -> str | None:
    """``StateDirectory=kvmss`` keeps naming the moved directory when it is
    still under /var/lib. When it is not, the installer creates it, and a
    directory the service writes to becomes a ``ReadWritePaths=`` (with
    ``ProtectSystem=strict`` it would be read-only otherwise)."""
    root = DIRECTORY_KEYS[key]
    names = value.split()
    kept, elsewhere = [], []
    for name in names:
        full = PurePosixPath(relocation.path(str(root / name)))
        if root in full.parents:
            kept.append(str(full.relative_to(root)))
        else:
            elsewhere.append(str(full))
    if kept == names:
        return None
    lines = [f"{key}={' '.join(kept)}"] if kept else []
    if elsewhere and key in WRITABLE_DIRECTORY_KEYS:
        lines.append(f"ReadWritePaths={' '.join(elsewhere)}")
    return "\n".join(lines)


def _quote(word: str) -> str:
    return word if re.fullmatch(r"[A-Za-z0-9/._+=:@%,-]+", word) else shlex.quote(word)
