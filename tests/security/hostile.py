"""Hostile names and paths, what an answer to one may be, and a check that
nothing was written outside the directories a service owns."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

# How many directories above a service's own storage the tests leave room
# for, so a "../" that escaped would land where the check can see it.
DEPTH = 4
MESSAGE_LIMIT = 2000


def hostile_values(tag: str) -> list[str]:
    """Values that have broken path handling, XML, shells or parsers; ``tag``
    names any file one of them could create, to look for it afterwards."""
    evil = f"kvmss-evil-{tag}"
    return [
        "..",
        ".",
        "../" * DEPTH + evil,
        f"../{evil}",
        f"..\\{evil}",
        f"/tmp/{evil}",
        f"a/b/{evil}",
        "%2F",
        f"%2F..%2F{evil}",
        "%00",
        "a\x00b",
        "\x00",
        "x" * 10_000,
        "\u00e9t\u00e9",
        "\u540d\u524d",
        "\u202ecod.exe",
        "\U0001f600",
        "<",
        "&",
        "'",
        '"',
        f"<{evil}>&'\"",
        "]]>",
        "a b",
        "x\n",
        "\r\nX-Injected: 1",
        "a\x01b",
        "\x1b]0;evil\x07\x1b[31m",
        "a\tb",
        "$(touch /tmp/" + evil + ")",
        "`id`",
        "-rf",
        "",
    ]


def path_segment(value: str) -> str:
    """``value`` as one URL path segment, every reserved character escaped."""
    return quote(value, safe="")


def problem(status: int, text: str, message_limit: int | None = MESSAGE_LIMIT) -> str | None:
    """What is wrong with an answer to a hostile request, or None: no 5xx,
    every 4xx exactly ``{"error": {"code", "message"}}``, its message at most
    ``message_limit`` characters (no echo of a 10,000-character name)."""
    if status >= 500:
        return f"{status} {text[:300]}"
    if 400 <= status < 500:
        try:
            body: Any = json.loads(text)
        except ValueError:
            return f"{status} body is not JSON: {text[:300]}"
        if not (isinstance(body, dict) and set(body) == {"error"}):
            return f"{status} not the error shape: {text[:300]}"
        err = body["error"]
        if not (isinstance(err, dict) and set(err) == {"code", "message"}):
            return f"{status} not the error shape: {text[:300]}"
        if not (isinstance(err["code"], str) and isinstance(err["message"], str)):
            return f"{status} not the error shape: {text[:300]}"
        if message_limit is not None and len(err["message"]) > message_limit:
            return f"{status} message of {len(err['message'])} characters echoes the input"
    return None


def tree(root: Path, skip: tuple[Path, ...]) -> set[str]:
    """Every path under ``root`` but those under ``skip``."""
    out = set()
    for p in root.rglob("*"):
        if any(p == s or s in p.parents for s in skip):
            continue
        out.add(str(p.relative_to(root)))
    return out


@contextmanager
def nothing_written_outside(root: Path, owned: tuple[Path, ...], tag: str) -> Iterator[None]:
    """Asserts on exit that nothing appeared under ``root`` but inside
    ``owned``, and that no file named for ``tag`` exists where an absolute
    or escaping path could have put it."""
    before = tree(root, owned)
    yield
    after = tree(root, owned)
    assert after == before, f"written outside the storage dirs: {sorted(after - before)[:10]}"
    for d in (Path("/tmp"), Path("/var/tmp"), Path("/"), Path.cwd(), *root.parents):
        found = list(d.glob(f"*{tag}*"))
        assert not found, f"hostile path reached the filesystem: {found}"
