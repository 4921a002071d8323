"""Every endpoint of an app, and requests that must not get past its authentication."""

from __future__ import annotations

import base64
import re
import sqlite3
from pathlib import Path
from typing import Any

from fastapi import FastAPI

Endpoint = tuple[str, str]  # (method, path template)

_PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(:path)?\}")
# What the docs routes FastAPI adds by itself serve: the shape of the API.
DOCS_REASON = "FastAPI's documentation of the API's shape (README names it); serves no data"


def documented(app: FastAPI) -> set[Endpoint]:
    """(method, path) of every operation in the app's OpenAPI document."""
    paths: dict[str, dict[str, Any]] = app.openapi()["paths"]
    return {(m.upper(), p) for p, ops in paths.items() for m in ops}


def routed(app: FastAPI) -> set[Endpoint]:
    """(method, path) of every route the app answers, documented or not."""
    out: set[Endpoint] = set()
    for route in app.routes:
        path = getattr(route, "path", None)
        methods = getattr(route, "methods", None)
        assert path is not None and methods, f"a route this suite cannot enumerate: {route!r}"
        out |= {(m, path) for m in methods}
    return out


def fill(path: str, values: dict[str, str]) -> str:
    """``path`` with each ``{param}`` replaced by its value (``x1`` by default)
    and each ``{param:path}`` by two segments."""

    def one(m: re.Match[str]) -> str:
        if m.group(2):
            return values.get(m.group(1), "a1/b1")
        return values.get(m.group(1), "x1")

    return _PARAM_RE.sub(one, path)


def bad_authorizations(token: str) -> list[str | None]:
    """Authorization headers that must all be refused (None: no header)."""
    return [
        None,
        "Bearer wrong-token-0123456789abcdef",
        token,  # the right token without "Bearer "
        f"Token {token}",
        "Basic " + base64.b64encode(f"kvmss:{token}".encode()).decode(),
        f"Bearer {token}x",
        f"Bearer {token[:-1]}",
        f"Bearer  {token}",
        f"Bearer{token}",
        "Bearer",
        "Bearer ",
    ]


def assert_unauthorized(what: str, status: int, body: Any, headers: Any, token: str) -> None:
    assert status == 401, f"{what}: {status} {body!r:.300}"
    assert isinstance(body, dict) and set(body) == {"error"}, f"{what}: {body!r:.300}"
    assert body["error"]["code"] == "Unauthorized", f"{what}: {body!r:.300}"
    assert set(body["error"]) == {"code", "message"}, f"{what}: {body!r:.300}"
    assert token not in body["error"]["message"], what
    assert headers.get("www-authenticate") == "Bearer", f"{what}: {dict(headers)}"


def sqlite_dump(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the SQLite database ``db``."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"'), key=repr) for t in tables}
    finally:
        conn.close()


def files_under(root: Path, *, skip_suffixes: tuple[str, ...] = ()) -> dict[str, int]:
    """Path (relative to ``root``) and size of every file under ``root``."""
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and not p.name.endswith(skip_suffixes)
    }
