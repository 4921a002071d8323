"""kvmss.hostjoin.join: waiting for the new agent to answer, on the
injected clock (the join itself runs against a real sshd in test_ssh.py)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

from bench.served import free_port
from kvmss.base.clock import FakeClock
from kvmss.hostjoin.join import wait_for_agent
from kvmss.hostjoin.steps import JoinError


class HostView:
    """An agent's ``GET /v1/host`` on 127.0.0.1: 200 with ``name``, or ``status``."""

    def __init__(self) -> None:
        self.name = "h"
        self.status = 200
        view = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"name": view.name}).encode()
                self.send_response(view.status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_a: object) -> None:
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def agent() -> Iterator[HostView]:
    view = HostView()
    yield view
    view.httpd.shutdown()
    view.httpd.server_close()


def test_wait_names_the_url_and_what_failed() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(JoinError) as e:
        wait_for_agent(url, "t" * 40, "h", FakeClock(), timeout=3)
    assert f"GET {url}/v1/host" in str(e.value) and "connection refused" in str(e.value)
    with pytest.raises(JoinError) as e:
        wait_for_agent(url, "t" * 40, "h", FakeClock(), timeout=30, down=lambda: "it exited")
    assert "it exited" in str(e.value)


def test_an_agent_answering_as_the_host_is_its_view(agent: HostView) -> None:
    agent.name = "h1"
    assert wait_for_agent(agent.url, "t" * 40, "h1", FakeClock())["name"] == "h1"


def test_another_host_or_token_is_named_at_the_deadline(agent: HostView) -> None:
    clock = FakeClock()
    agent.name = "other"
    with pytest.raises(JoinError, match="no answer within 9 s: it answers as host 'other'"):
        wait_for_agent(agent.url, "t" * 40, "h1", clock, timeout=9)
    assert clock.monotonic() == pytest.approx(9)
    agent.status = 401
    with pytest.raises(JoinError, match="HTTP 401: it refuses the new token"):
        wait_for_agent(agent.url, "t" * 40, "h1", FakeClock(), timeout=2)


def test_the_host_is_asked_every_two_seconds_whether_the_agent_runs(agent: HostView) -> None:
    clock = FakeClock()
    asked: list[float] = []

    def down() -> str | None:
        asked.append(clock.monotonic())
        return "the agent exited" if len(asked) == 3 else None

    agent.status = 503
    with pytest.raises(JoinError, match="HTTP 503; the agent exited"):
        wait_for_agent(agent.url, "t" * 40, "h1", clock, timeout=60, down=down)
    assert asked == pytest.approx([2.0, 4.0, 6.0])
