"""The dashboard's static files, read once from the package, and the headers
every dashboard response carries: a Content-Security-Policy that lets the
page load and reach only the controller itself, and no caching of answers."""

from __future__ import annotations

from importlib import resources
from typing import Final

from fastapi import Response

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_TYPES: Final = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


def _read() -> dict[str, bytes]:
    root = resources.files("controller.ui") / "static"
    return {name: (root / name).read_bytes() for name in _TYPES}


FILES: Final = _read()


def page(name: str) -> Response:
    """One of :data:`FILES` (the caller checked the name)."""
    return Response(FILES[name], media_type=_TYPES[name], headers=HEADERS)
