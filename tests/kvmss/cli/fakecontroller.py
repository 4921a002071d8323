"""A stand-in for the controller that the CLI tests run ``kvmss`` against: a
real HTTP server on 127.0.0.1 that records requests and answers canned API
documents (these tests are about what the CLI sends and prints)."""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from click.testing import CliRunner, Result

from kvmss.base.clock import FakeClock
from kvmss.cli.main import main
from kvmss.cli.state import CliState

TOKEN = "ctl-token-5f2e9a7c41d8"
AGENT_TOKEN = "agent-token-0b7d3e19aa42"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int
    doc: Any = None
    raw: bytes | None = None


class FakeController:
    """Answers each (method, path) with its replies in order, repeating the last."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.routes: dict[tuple[str, str], list[Reply]] = {}
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.routes[(method, path)] = list(replies)

    def _next(self, method: str, path: str) -> Reply:
        with self._lock:
            replies = self.routes.get((method, path))
            if not replies:
                return Reply(404, {"error": {"code": "NotFound", "message": f"no {path}"}})
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                url = urlsplit(self.path)
                rec = Recorded(
                    method=self.command,
                    path=url.path,
                    query=parse_qs(url.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self._body(),
                )
                with fake._lock:
                    fake.requests.append(rec)
                reply = fake._next(self.command, url.path)
                payload = reply.raw
                if payload is None and reply.doc is not None:
                    payload = json.dumps(reply.doc).encode()
                self.send_response(reply.status)
                if payload:
                    ctype = "application/json" if reply.raw is None else "text/html"
                    self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload or b"")))
                self.end_headers()
                if payload:
                    self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def only(self) -> Recorded:
        assert len(self.requests) == 1, [(r.method, r.path) for r in self.requests]
        return self.requests[0]


def run(
    api: FakeController,
    *args: str,
    clock: FakeClock | None = None,
    env: dict[str, str] | None = None,
    auth: Sequence[str] = ("--token", TOKEN),
) -> Result:
    result = CliRunner().invoke(
        main,
        ["--url", api.url, *auth, *args],
        obj=CliState(clock=clock or FakeClock()),
        env=env,
    )
    # Never a traceback, whatever happened; never the token.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert TOKEN not in result.output and AGENT_TOKEN not in result.output
    return result


def rows(output: str) -> list[list[str]]:
    """A rendered table's cells, split on runs of two or more spaces."""
    lines = output.strip().splitlines()
    return [re.split(r"\s{2,}", line.strip()) for line in lines]
