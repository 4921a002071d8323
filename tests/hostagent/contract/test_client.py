"""The controller's agent client against real sockets: an agent that is not
there, one that accepts and never answers, error bodies, and the token never
shown."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hostagent.contract import operations
from hostagent.contract.client import AgentClient, AgentError, AgentUnreachable
from kvmss.base.clock import FakeClock

TOKEN = "tok-" + "s" * 40


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str, str, bytes]] = []
    listing = b"{}"  # what GET /v1/instances answers

    def _answer(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n) if n else b""
        Handler.seen.append((self.command, self.path, self.headers["Authorization"], data))
        if self.path.startswith("/v1/operations/op-1"):
            op = {"id": "op-1", "kind": "reimage", "instance": "web-0", "status": "Succeeded"}
            self._answer(200, json.dumps({**op, "startTime": "t"}).encode())
        elif self.path.startswith("/v1/instances/web-0/commit"):
            op = {"id": "c-1", "kind": "commit", "instance": "web-0", "status": "InProgress"}
            self._answer(202, json.dumps({**op, "startTime": "t"}).encode())
        elif self.command == "DELETE" and self.path.startswith("/v1/instances/web-0?"):
            op = {"id": "d 1", "kind": "delete", "instance": "web-0", "status": "InProgress"}
            self._answer(202, json.dumps({**op, "startTime": "t"}).encode())
        elif self.path.startswith("/v1/instances/gone"):
            err = {"error": {"code": "NotFound", "message": "instance gone does not exist"}}
            self._answer(404, json.dumps(err).encode())
        elif self.path.startswith("/v1/instances/busy"):
            err = {"error": {"code": "Conflict", "message": "busy"}}
            self._answer(409, json.dumps(err).encode())
        elif self.path == "/v1/instances":
            self._answer(200, Handler.listing)
        elif self.path.startswith("/v1/host"):
            self._answer(502, b"<html>bad gateway</html>", "text/html")
        else:
            self._answer(200, b"not json", "text/plain")

    do_GET = do_POST = do_DELETE = _handle

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_answers_errors_and_what_was_sent(server: str) -> None:
    c = AgentClient(server, TOKEN)
    assert c.operation("op-1").status == "Succeeded"
    assert c.commit("web-0", "c-1").status == "InProgress"
    assert c.instance("gone") is None  # 404 on an instance: not on this host
    with pytest.raises(AgentError) as e:
        c.rollback("busy", "r-1")
    assert (e.value.status, e.value.code, e.value.message) == (409, "Conflict", "busy")
    with pytest.raises(AgentError) as e:
        c.host()
    assert (e.value.status, e.value.code) == (502, "HttpError")
    assert "bad gateway" in e.value.message
    with pytest.raises(AgentError) as e:
        c.operation("other")
    assert e.value.code == "InvalidResponse"
    assert c.delete("web-0", delete_data_disks=True, operation_id="d 1").kind == "delete"

    sent = Handler.seen
    assert {s[2] for s in sent} == {f"Bearer {TOKEN}"}
    method, path, _, body = sent[1]
    assert (method, path) == ("POST", "/v1/instances/web-0/commit")
    assert json.loads(body) == {"operationId": "c-1"}
    assert sent[-1][:2] == (
        "DELETE",
        "/v1/instances/web-0?deleteDataDisks=true&operationId=d+1",
    )
    assert TOKEN not in repr(c)


def test_an_agent_that_is_not_there_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: refused
    c = AgentClient(f"http://127.0.0.1:{port}", TOKEN, timeout=2)
    with pytest.raises(AgentUnreachable) as e:
        c.instances()
    assert e.value.status == 0 and e.value.code == "AgentUnreachable"
    assert e.value.message.endswith(": ConnectionError")
    assert TOKEN not in str(e.value)


def test_an_agent_that_accepts_and_never_answers_times_out() -> None:
    """A hung host (e.g. its agent SIGSTOPped): the kernel accepts, nobody answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        c = AgentClient(f"http://127.0.0.1:{port}", TOKEN, timeout=0.3)
        with pytest.raises(AgentUnreachable) as e:
            c.operation("op-1")
        assert e.value.message.endswith(": ReadTimeout")


def test_a_view_parses_into_the_wire_model(server: str) -> None:
    c = AgentClient(server, TOKEN)
    assert isinstance(c.operation("op-1"), operations.Operation)


@pytest.mark.parametrize(
    "listing",
    [{}, {"value": {"name": "web-0"}}, {"value": [{"name": "web-0"}]}, [{"value": []}]],
    ids=["no value", "value not a list", "a view missing fields", "a list"],
)
def test_a_listing_that_is_no_instance_list_is_an_invalid_response(
    server: str, listing: object
) -> None:
    Handler.listing = json.dumps(listing).encode()
    with pytest.raises(AgentError) as e:
        AgentClient(server, TOKEN).instances()
    assert e.value.code == "InvalidResponse"


def test_an_empty_listing_is_no_instance(server: str) -> None:
    Handler.listing = b'{"value": []}'
    assert AgentClient(server, TOKEN).instances() == []


def _op(status: operations.OperationStatus) -> operations.Operation:
    return operations.Operation(
        id="op-1", kind="reimage", instance="web-0", status=status, startTime="t"
    )


def test_wait_polls_on_the_clock_until_the_operation_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    c = AgentClient("http://agent.invalid", TOKEN, clock=clock)
    answers: Iterator[operations.OperationStatus] = iter(["InProgress", "InProgress", "Succeeded"])
    monkeypatch.setattr(c, "operation", lambda _op_id: _op(next(answers)))
    assert c.wait(_op("InProgress"), timeout=60, poll=5).status == "Succeeded"
    assert clock.monotonic() == 10  # asked at once, then every 5 s
    assert c.wait(_op("Failed")).status == "Failed"  # an ended operation: nothing asked


def test_wait_gives_up_at_its_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    c = AgentClient("http://agent.invalid", TOKEN, clock=clock)
    monkeypatch.setattr(c, "operation", lambda _op_id: _op("InProgress"))
    with pytest.raises(TimeoutError, match=r"op-1 \(reimage\) still running after 30"):
        c.wait(_op("InProgress"), timeout=30, poll=5)
    assert clock.monotonic() == 30
