"""hostagent.guest.extensions: the guest script run for real (busybox ash and dash,
with wget, curl or python3 as the HTTP client) against an HTTP server on
127.0.0.1 standing in for the agent's guest listener; the order and what the
generator refuses are in test_extension_scripts."""

from __future__ import annotations

import base64
import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hostagent.contract import instancespec, reports
from hostagent.guest import extensions
from kvmss.base.clock import SystemClock
from kvmss.base.waiting import wait_for, wait_until
from tests.hostagent.guest.test_extension_scripts import INSTANCE, INSTANCE_ID, b64, ext, script_for

pytestmark = pytest.mark.timeout(120)


# ---- the script, run for real -------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Agent:
    """An HTTP server that records what the guest script sends; it also
    serves GET /app/health (status ``app_status``) as the guest's application."""

    server: http.server.ThreadingHTTPServer
    requests: list[Request] = field(default_factory=list)
    app_status: int = 200
    fail_next_posts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def report_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/guest/instances/{INSTANCE}"

    def posts(self, prefix: str = "/v1/guest/") -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == "POST" and r.path.startswith(prefix)]

    def wait_for(self, pred: Callable[[list[Request]], bool], seconds: float) -> list[Request]:
        def attempt() -> list[Request] | None:
            posts = self.posts()
            return posts if pred(posts) else None

        got = wait_for(SystemClock(), attempt, timeout=seconds, interval=0.1)
        if got is not None:
            return got
        raise AssertionError(f"condition not met in {seconds}s; requests: {self.posts()}")


@pytest.fixture
def agent() -> Iterator[Agent]:
    holder: list[Agent] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _record(self) -> Agent:
            a = holder[0]
            n = int(self.headers.get("Content-Length") or 0)
            req = Request(self.command, self.path, dict(self.headers), self.rfile.read(n))
            with a.lock:
                a.requests.append(req)
            return a

        def do_POST(self) -> None:
            a = self._record()
            with a.lock:
                fail = a.fail_next_posts > 0
                a.fail_next_posts -= int(fail)
            self.send_response(503 if fail else 204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            a = self._record()
            status = a.app_status if self.path == "/app/health" else 404
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Agent(server))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield holder[0]
    server.shutdown()
    server.server_close()


@dataclass(frozen=True)
class Variant:
    """A guest userland: the shell that runs the script and what PATH holds."""

    name: str
    shell: list[str]
    path: str


# What the script needs besides its HTTP client (dash has no applets).
BASE_TOOLS = [
    "sh", "base64", "tail", "tr", "mkdir", "mv", "rm", "chmod", "cp", "cat",
    "sleep", "setsid", "timeout", "grep", "env",
]  # fmt: skip


def _toolbox(root: Path, tools: dict[str, str]) -> str:
    root.mkdir(parents=True)
    for name, target in tools.items():
        (root / name).symlink_to(target)
    return str(root)


def _system_tool(name: str) -> str:
    found = shutil.which(name, path="/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    if found is None:
        pytest.skip(f"{name} is not installed")
    return os.path.realpath(found)


def make_variant(name: str, root: Path) -> Variant:
    if name == "busybox":
        # Only busybox applets on PATH: what the tiny image has.
        busybox = _system_tool("busybox")
        applets = subprocess.run(
            [busybox, "--list"], capture_output=True, text=True, check=True
        ).stdout.split()
        return Variant(name, [busybox, "sh"], _toolbox(root, dict.fromkeys(applets, busybox)))
    if name == "dash":
        # /bin/sh is dash on Debian; the system's tools, GNU wget among them.
        _system_tool("wget")
        return Variant(name, ["/bin/sh"], "/usr/bin:/bin")
    client = {"dash-curl": "curl", "dash-python3": "python3"}[name]
    tools = {t: _system_tool(t) for t in [*BASE_TOOLS, client]}
    return Variant(name, [_system_tool("dash")], _toolbox(root, tools))


VARIANTS = ["busybox", "dash", "dash-curl", "dash-python3"]


@dataclass
class Run:
    result: subprocess.CompletedProcess[str]
    state: Path
    seconds: float


def run_script(
    script: str, variant: Variant, state: Path, env: dict[str, str] | None = None
) -> Run:
    script_file = state.parent / "user-data"
    script_file.write_text(script)
    full_env = {"PATH": variant.path, "KVMSS_STATE_DIR": str(state), "HOME": "/root"}
    full_env.update(env or {})
    start = time.monotonic()
    result = subprocess.run(
        [*variant.shell, str(script_file)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    return Run(result, state, time.monotonic() - start)


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    # Stop application-health loops the test started (they watch their pid file).
    for pid_file in tmp_path.glob("**/health.pid"):
        pid = int(pid_file.read_text())
        pid_file.unlink()
        _wait_gone(pid, 10)


def _wait_gone(pid: int, seconds: float) -> None:
    gone = wait_until(
        SystemClock(), lambda: not Path(f"/proc/{pid}").exists(), timeout=seconds, interval=0.1
    )
    if not gone:
        os.kill(pid, 9)
        raise AssertionError(f"health loop {pid} did not stop when its pid file went away")


def report(req: Request) -> reports.ExtensionReport:
    return reports.ExtensionReport.model_validate_json(req.body)


def output(req: Request) -> bytes:
    return base64.b64decode(report(req).outputBase64 or "")


MANY_LINES = "".join(f"{i:09d}\n" for i in range(1000)).encode()


@pytest.mark.parametrize("variant_name", VARIANTS)
def test_script_runs_extensions_in_order_and_reports(
    variant_name: str, agent: Agent, work: Path
) -> None:
    variant = make_variant(variant_name, work / "bin")
    token = "tok-" + secrets.token_hex(16)
    model = [
        ext("dependent", "failing", commandToExecute="echo must not run"),
        ext("failing", "first", commandToExecute="echo about to fail; exit 3"),
        ext(
            "first",
            commandToExecute=(
                'echo "out of first"; echo "err of first" >&2; pwd;'
                ' printf "%s %s %s\\n" "$KVMSS_INSTANCE_ID" "$KVMSS_EXTENSION" "$KVMSS_INSTANCE"'
            ),
        ),
        instancespec.Extension(
            name="second",
            settings={"commandToExecute": "echo settings lost; exit 9"},
            protectedSettings={"script": b64('echo "script ran in $(pwd)"\necho "it\'s"\n')},
            provisionAfterExtensions=["first"],
        ),
        ext(
            "independent",
            commandToExecute="i=0; while [ $i -lt 1000 ];"
            ' do printf "%09d\\n" $i; i=$((i + 1)); done',
        ),
        ext("transitive", "dependent", commandToExecute="echo must not run either"),
        ext("envcheck", commandToExecute="env"),
    ]
    script = extensions.user_data_script(
        instance=INSTANCE,
        instance_id=INSTANCE_ID,
        extensions=model,
        report_url=agent.report_url + "/",
        token=token,
        custom_data=b64(b"custom \x00\xff data"),
    )
    state = work / "state"
    run = run_script(script, variant, state)

    assert run.result.returncode == 0, run.result.stderr
    assert token not in run.result.stdout + run.result.stderr
    assert run.result.stderr == ""
    assert "kvmss: extension failing: Failed (exit code 3)" in run.result.stdout

    posts = agent.posts()
    seen = [(r.path.rsplit("/", 1)[1], report(r).status, report(r).exitCode) for r in posts]
    assert seen == [
        ("first", "Transitioning", None),
        ("first", "Succeeded", 0),
        ("failing", "Transitioning", None),
        ("failing", "Failed", 3),
        ("dependent", "Failed", None),
        ("second", "Transitioning", None),
        ("second", "Succeeded", 0),
        ("independent", "Transitioning", None),
        ("independent", "Succeeded", 0),
        ("transitive", "Failed", None),
        ("envcheck", "Transitioning", None),
        ("envcheck", "Succeeded", 0),
    ]
    for r in posts:
        assert r.path.startswith(f"/v1/guest/instances/{INSTANCE}/extensions/")
        assert r.headers["Authorization"] == f"Bearer {token}"
        assert r.headers["Content-Type"] == "application/json"
        assert report(r).instanceId == INSTANCE_ID
    by = {(r.path.rsplit("/", 1)[1], report(r).status): r for r in posts}

    first_dir = state / "extensions" / "first"
    assert output(by["first", "Succeeded"]).decode() == (
        f"out of first\nerr of first\n{first_dir}\n{INSTANCE_ID} first {INSTANCE}\n"
    )
    assert output(by["failing", "Failed"]) == b"about to fail\n"
    assert output(by["dependent", "Failed"]) == b"skipped: dependency 'failing' did not succeed"
    assert output(by["transitive", "Failed"]) == (
        b"skipped: dependency 'dependent' did not succeed"
    )
    second_dir = state / "extensions" / "second"
    assert output(by["second", "Succeeded"]).decode() == f"script ran in {second_dir}\nit's\n"
    assert (second_dir / "script.sh").is_file()
    assert output(by["independent", "Succeeded"]) == MANY_LINES[-4096:]
    env_out = output(by["envcheck", "Succeeded"]).decode()
    assert f"KVMSS_INSTANCE_ID={INSTANCE_ID}\n" in env_out
    assert "KVMSS_EXTENSION=envcheck\n" in env_out
    assert token not in env_out
    assert b64(token) not in env_out
    assert output(by["first", "Transitioning"]) == b""

    assert (state / "extensions" / "status").read_text() == (
        "first Succeeded 0\n"
        "failing Failed 3\n"
        "dependent Failed null\n"
        "second Succeeded 0\n"
        "independent Succeeded 0\n"
        "transitive Failed null\n"
        "envcheck Succeeded 0\n"
    )
    custom = state / "custom-data"
    assert custom.read_bytes() == b"custom \x00\xff data"
    assert custom.stat().st_mode & 0o777 == 0o600


def test_script_without_extensions_or_custom_data(agent: Agent, work: Path) -> None:
    variant = make_variant("busybox", work / "bin")
    run = run_script(script_for([], report_url=agent.report_url), variant, work / "state")
    assert run.result.returncode == 0
    assert (work / "state" / "extensions" / "status").read_text() == ""
    assert not (work / "state" / "custom-data").exists()
    assert agent.posts() == []


def test_reports_are_retried_until_the_agent_answers(agent: Agent, work: Path) -> None:
    variant = make_variant("busybox", work / "bin")
    agent.fail_next_posts = 2
    script = script_for([ext("only")], report_url=agent.report_url)
    run = run_script(script, variant, work / "state", {"KVMSS_REPORT_DELAY": "0"})
    assert run.result.returncode == 0
    statuses = [report(r).status for r in agent.posts()]
    assert statuses == ["Transitioning"] * 3 + ["Succeeded"]


def test_unreachable_agent_does_not_fail_the_script(work: Path) -> None:
    variant = make_variant("busybox", work / "bin")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    url = f"http://127.0.0.1:{closed_port}/v1/guest/instances/{INSTANCE}"
    script = script_for([ext("only", commandToExecute="exit 4")], report_url=url)
    env = {"KVMSS_REPORT_ATTEMPTS": "2", "KVMSS_REPORT_DELAY": "0"}
    run = run_script(script, variant, work / "state", env)
    assert run.result.returncode == 0
    assert "extension only: could not report Failed to the host agent" in run.result.stdout
    assert (work / "state" / "extensions" / "status").read_text() == "only Failed 4\n"


# ---- application health ------------------------------------------------------------


def health_ext(**settings: Any) -> instancespec.Extension:
    return instancespec.Extension(
        name="apphealth", type="ApplicationHealthLinux", settings=settings
    )


def health_reports(agent: Agent) -> list[reports.HealthReport]:
    return [
        reports.HealthReport.model_validate_json(r.body)
        for r in agent.posts(f"/v1/guest/instances/{INSTANCE}/health")
    ]


def wait_health(agent: Agent, state: str, after: int = 0) -> None:
    def pred(_: list[Request]) -> bool:
        return any(h.state == state for h in health_reports(agent)[after:])

    agent.wait_for(pred, 15)


@pytest.mark.parametrize("variant_name", VARIANTS)
def test_http_health_loop_reports_from_inside(variant_name: str, agent: Agent, work: Path) -> None:
    variant = make_variant(variant_name, work / "bin")
    token = "tok-" + secrets.token_hex(16)
    cloud = work / "cloud"
    cloud.mkdir()
    model = [
        health_ext(protocol="http", port=agent.port, requestPath="app/health", intervalInSeconds=1),
        ext("after-health", "apphealth", commandToExecute="echo after"),
    ]
    script = script_for(model, report_url=agent.report_url, token=token)
    state = work / "state"
    run = run_script(script, variant, state, {"KVMSS_CLOUD_DIR": str(cloud)})

    # The script returns although the loop lives on (its pipes were not kept open).
    assert run.result.returncode == 0, run.result.stderr
    assert run.seconds < 20
    assert token not in run.result.stdout + run.result.stderr
    ext_reports = [
        (r.path.rsplit("/", 1)[1], report(r).status)
        for r in agent.posts()
        if "/extensions/" in r.path
    ]
    assert ext_reports == [
        ("apphealth", "Transitioning"),
        ("apphealth", "Succeeded"),
        ("after-health", "Transitioning"),
        ("after-health", "Succeeded"),
    ]
    health_dir = state / "extensions" / "apphealth"
    pid = int((health_dir / "health.pid").read_text())
    assert Path(f"/proc/{pid}").exists()

    wait_health(agent, "Healthy")
    with agent.lock:
        probes = [r for r in agent.requests if r.method == "GET"]
    assert probes and all(r.path == "/app/health" for r in probes)
    health_posts = agent.posts(f"/v1/guest/instances/{INSTANCE}/health")
    assert all(r.headers["Authorization"] == f"Bearer {token}" for r in health_posts)
    assert all(h.instanceId == INSTANCE_ID for h in health_reports(agent))

    agent.app_status = 503
    wait_health(agent, "Unhealthy", after=len(health_reports(agent)))
    agent.app_status = 200
    wait_health(agent, "Healthy", after=len(health_reports(agent)))

    # Starting it again (as the boot hook does) leaves the running loop alone.
    hook = state / "boot.d" / "health-apphealth"
    assert hook.read_text() == f"#!/bin/sh\nexec sh '{health_dir}/health.sh' start\n"
    assert (cloud / "scripts" / "per-boot" / "kvmss-health-apphealth").read_text() == (
        hook.read_text()
    )
    again = subprocess.run(
        [*variant.shell, str(hook)], env={"PATH": variant.path}, capture_output=True, text=True
    )
    assert again.returncode == 0
    assert "already running" in again.stdout
    assert int((health_dir / "health.pid").read_text()) == pid

    # Removing the pid file stops the loop.
    (health_dir / "health.pid").unlink()
    _wait_gone(pid, 10)


@pytest.mark.parametrize("variant_name", ["busybox", "dash-python3"])
def test_tcp_health_loop(variant_name: str, agent: Agent, work: Path) -> None:
    variant = make_variant(variant_name, work / "bin")
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    try:
        model = [health_ext(protocol="tcp", port=port, intervalInSeconds=1)]
        run = run_script(script_for(model, report_url=agent.report_url), variant, work / "state")
        assert run.result.returncode == 0, run.result.stderr
        wait_health(agent, "Healthy")
    finally:
        listener.close()
    wait_health(agent, "Unhealthy", after=len(health_reports(agent)))
