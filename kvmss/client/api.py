"""HTTP plumbing for talking to the controller: one session with the bearer
token, the API's ``{"error": {"code", "message"}}`` decoded into
:class:`ApiError`, and uploads streamed from files (never read into memory).

This module speaks the HTTP contract only; it imports nothing from the
controller, so the CLI runs on machines that only have ``requests``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit, urlunsplit

import requests

# (connect, read) timeouts in seconds. Uploads wait longer for the answer:
# the controller checks and hashes the whole image before it replies.
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 60.0)
UPLOAD_TIMEOUT: tuple[float, float] = (10.0, 1800.0)

JSON_MERGE_PATCH = "application/merge-patch+json"
OCTET_STREAM = "application/octet-stream"


class ApiError(Exception):
    """The controller answered with an error status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} ({code})")
        self.status = status
        self.code = code
        self.message = message


class ControllerUnreachable(Exception):
    """No HTTP answer at all: refused, timed out, name not resolved, ..."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach the controller at {url}: {reason}")
        self.url = url
        self.reason = reason


def display_url(url: str) -> str:
    """``url`` without any ``user:password@`` part."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def path_of(*segments: str) -> str:
    """``/v1`` + each segment percent-encoded: ``path_of("scaleSets", "a b")``
    is ``/v1/scaleSets/a%20b`` (a name can never add a path level)."""
    return "/v1/" + "/".join(quote(s, safe="") for s in segments)


def _walk_causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything it wraps (args, ``reason``, cause, context)."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if any(e is s for s in seen) or len(seen) > 20:
            continue
        seen.append(e)
        nested = [*e.args, getattr(e, "reason", None), e.__cause__, e.__context__]
        todo.extend(n for n in nested if isinstance(n, BaseException))
    return seen


def unreachable_reason(exc: requests.RequestException) -> str:
    """A short human reason for a failed connection, never the request itself."""
    chain = _walk_causes(exc)
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    if any(isinstance(e, requests.Timeout | TimeoutError) for e in chain):
        return "timed out"
    if any(isinstance(e, requests.exceptions.SSLError) for e in chain):
        return "TLS handshake failed"
    text = " ".join(str(e) for e in chain)
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "host name not resolved"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return f"request failed ({type(exc).__name__})"


def _decode_error(r: requests.Response) -> ApiError:
    try:
        err = r.json()["error"]
        return ApiError(r.status_code, str(err["code"]), str(err["message"]))
    except (ValueError, KeyError, TypeError):
        # Not the API's shape (a proxy page, a crash): say the status, not the body.
        reason = f" {r.reason}" if r.reason else ""
        return ApiError(r.status_code, "HttpError", f"HTTP {r.status_code}{reason}")


class ApiClient:
    """Calls ``base_url`` + ``/v1/...`` with ``Authorization: Bearer <token>``.

    Every call returns the decoded JSON body, or None for an empty answer
    (204, or 202 without a body).
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.session = session or requests.Session()
        self.timeout = timeout

    def __repr__(self) -> str:  # never show the token
        return f"ApiClient({display_url(self.base_url)!r})"

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        data: BinaryIO | None = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: tuple[float, float] | None = None,
    ) -> Any:
        """One call. ``body`` is sent as JSON; ``data`` is a raw stream."""
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        payload: bytes | BinaryIO | None = data
        if body is not None:
            payload = json.dumps(body).encode()
        if payload is not None:
            headers["Content-Type"] = content_type
        try:
            r = self.session.request(
                method,
                self.base_url + path,
                data=payload,
                params=params,
                headers=headers,
                timeout=timeout or self.timeout,
            )
        except requests.RequestException as e:
            raise ControllerUnreachable(display_url(self.base_url), unreachable_reason(e)) from None
        if r.status_code >= 400:
            raise _decode_error(r)
        if r.status_code == 204 or not r.content:
            return None
        try:
            return r.json()
        except ValueError:
            raise ApiError(
                r.status_code, "BadResponse", f"{method} {path}: the answer is not JSON"
            ) from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, body=body)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body)

    def patch_merge(self, path: str, patch: Mapping[str, Any]) -> Any:
        """PATCH with a JSON merge patch (RFC 7396)."""
        return self.request("PATCH", path, body=patch, content_type=JSON_MERGE_PATCH)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def upload(self, path: str, file: Path, params: Mapping[str, str] | None = None) -> Any:
        """PUT ``file`` as the raw body, streamed from disk (requests sends an
        open file in blocks, with its size as Content-Length). An unreadable
        file raises OSError."""
        with open(file, "rb") as f:
            return self.request(
                "PUT",
                path,
                data=f,
                params=params,
                content_type=OCTET_STREAM,
                timeout=UPLOAD_TIMEOUT,
            )
