"""The ``kvmss`` CLI's errors, tokens and connection failures (one line on
stderr, never a traceback or a secret), against the stand-in controller of
tests.kvmss.cli.fakecontroller; and what the CLI loads at start."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from click.testing import CliRunner

from kvmss.cli.main import main
from tests.kvmss.cli.fakecontroller import TOKEN, FakeController, Reply, run


def test_api_error_is_one_line_on_stderr_exit_1(api: FakeController) -> None:
    api.on(
        "GET",
        "/v1/scaleSets/nope",
        Reply(404, {"error": {"code": "NotFound", "message": "scale set nope: not found"}}),
    )
    r = run(api, "vmss", "show", "nope")
    assert r.exit_code == 1
    assert r.stdout == ""
    assert r.stderr == "kvmss: scale set nope: not found (NotFound)\n"


def test_an_error_page_that_is_not_the_api_shape(api: FakeController) -> None:
    api.on("GET", "/v1/scaleSets", Reply(502, raw=b"<html>\n<h1>Bad Gateway</h1>\n</html>"))
    r = run(api, "vmss", "list")
    assert r.exit_code == 1
    assert r.stderr == "kvmss: HTTP 502 Bad Gateway (HttpError)\n"


def test_multiline_messages_stay_on_one_line(api: FakeController) -> None:
    err = {"error": {"code": "InvalidParameter", "message": "first\nsecond\x1b[31m"}}
    api.on("PATCH", "/v1/scaleSets/web", Reply(400, err))
    r = run(api, "vmss", "update", "web", "--set", "a=1")
    assert r.exit_code == 1
    assert r.stderr == "kvmss: first second?[31m (InvalidParameter)\n"


def test_unreachable_controller(api: FakeController) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    r = CliRunner().invoke(main, ["--url", url, "--token", TOKEN, "vmss", "list"])
    assert r.exit_code == 1
    assert r.stderr == f"kvmss: cannot reach the controller at {url}: connection refused\n"
    assert TOKEN not in r.output
    # A password in the URL is not repeated.
    url = f"http://admin:pw-1234567@127.0.0.1:{port}"
    r = CliRunner().invoke(main, ["--url", url, "--token", TOKEN, "vmss", "list"])
    assert r.exit_code == 1
    assert "pw-1234567" not in r.output
    assert f"at http://127.0.0.1:{port}: connection refused" in r.stderr


def test_a_token_echoed_by_the_server_is_scrubbed(api: FakeController) -> None:
    msg = f"bad token {TOKEN}"
    api.on("GET", "/v1/hosts", Reply(401, {"error": {"code": "Unauthorized", "message": msg}}))
    r = run(api, "host", "list")  # run() asserts the token is nowhere in the output
    assert r.exit_code == 1
    assert r.stderr == "kvmss: bad token *** (Unauthorized)\n"


def test_token_file_and_env(api: FakeController, tmp_path: Path) -> None:
    api.on("GET", "/v1/scaleSets", Reply(200, {"value": []}))
    tf = tmp_path / "token"
    tf.write_text(f"  {TOKEN}\n")
    r = run(api, "vmss", "list", auth=("--token-file", str(tf)))
    assert r.exit_code == 0, r.output
    assert api.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"

    r = run(api, "vmss", "list", auth=(), env={"KVMSS_TOKEN_FILE": str(tf)})
    assert api.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"

    # An explicit --token-file beats KVMSS_TOKEN from the environment.
    r = run(
        api, "vmss", "list", auth=("--token-file", str(tf)), env={"KVMSS_TOKEN": "other-token-1"}
    )
    assert r.exit_code == 0
    assert api.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"

    r = run(api, "vmss", "list", auth=("--token", TOKEN, "--token-file", str(tf)))
    assert r.exit_code == 2 and "not both" in r.output


def test_missing_or_bad_token_is_a_usage_error(api: FakeController, tmp_path: Path) -> None:
    env = {"KVMSS_TOKEN": "", "KVMSS_TOKEN_FILE": ""}
    r = run(api, "vmss", "list", auth=(), env=env)
    assert r.exit_code == 2 and "no token" in r.output
    r = run(api, "vmss", "list", auth=("--token-file", str(tmp_path / "absent")))
    assert r.exit_code == 2 and "cannot read" in r.output
    bad = tmp_path / "bad"
    bad.write_text("two words-secretish\n")
    r = run(api, "vmss", "list", auth=("--token-file", str(bad)))
    assert r.exit_code == 2 and "spaces or non-printable" in r.output
    assert "secretish" not in r.output
    assert api.requests == []


def test_url_must_be_http(api: FakeController) -> None:
    r = CliRunner().invoke(main, ["--url", "127.0.0.1:8080", "--token", TOKEN, "vmss", "list"])
    assert r.exit_code == 2 and "must start with http://" in r.output


# --- what the CLI loads at start ------------------------------------------------


def test_the_cli_module_does_not_import_the_controller() -> None:
    import subprocess

    code = (
        "import sys, kvmss.cli.main; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('controller', 'hostagent', "
        "'fastapi', 'sqlalchemy')]; print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
