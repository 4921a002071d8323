"""hostagent.guest.extensions before anything runs: the provisioning order and what
the script generator refuses (bad settings, reserved names, secrets never
echoed), and that what it generates passes shellcheck."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hostagent.contract import instancespec
from hostagent.guest import extensions
from hostagent.guest.extensions import ExtensionOrderError

pytestmark = pytest.mark.timeout(120)

INSTANCE = "web-0"
INSTANCE_ID = "i-web-0-g3-1a2b3c"


def ext(name: str, *after: str, **settings: Any) -> instancespec.Extension:
    return instancespec.Extension(
        name=name,
        settings=settings or {"commandToExecute": "true"},
        provisionAfterExtensions=list(after),
    )


def names(exts: list[instancespec.Extension]) -> list[str]:
    return [e.name for e in exts]


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


# ---- order ---------------------------------------------------------------------


def test_order_chain_runs_dependencies_first() -> None:
    model = [ext("c", "b"), ext("b", "a"), ext("a")]
    assert names(extensions.order(model)) == ["a", "b", "c"]


def test_order_diamond_keeps_model_order_between_ready_extensions() -> None:
    model = [ext("d", "b", "c"), ext("c", "a"), ext("b", "a"), ext("a")]
    assert names(extensions.order(model)) == ["a", "c", "b", "d"]


def test_order_is_stable_for_ties() -> None:
    assert names(extensions.order([ext("x"), ext("y"), ext("z")])) == ["x", "y", "z"]
    assert names(extensions.order([ext("x"), ext("y"), ext("z", "x")])) == ["x", "y", "z"]
    assert names(extensions.order([ext("z", "y"), ext("x"), ext("y")])) == ["x", "y", "z"]
    assert extensions.order([]) == []


def test_order_unknown_name() -> None:
    with pytest.raises(ExtensionOrderError) as e:
        extensions.order([ext("a"), ext("b", "a", "x")])
    assert str(e.value) == ("extension 'b' names unknown extension 'x' in provisionAfterExtensions")
    assert isinstance(e.value, ValueError)


def test_order_self_reference() -> None:
    with pytest.raises(ExtensionOrderError, match="'a' names itself in provisionAfterExtensions"):
        extensions.order([ext("a", "a")])


def test_order_two_cycle() -> None:
    with pytest.raises(ExtensionOrderError) as e:
        extensions.order([ext("a", "b"), ext("b", "a")])
    assert "provisionAfterExtensions" in str(e.value)
    assert "a -> b -> a" in str(e.value)


def test_order_cycle_reached_through_another_extension() -> None:
    # c waits for the cycle a -> b -> e -> a but is not part of it.
    model = [ext("c", "a"), ext("ok"), ext("a", "b"), ext("b", "e"), ext("e", "a")]
    with pytest.raises(ExtensionOrderError) as e:
        extensions.order(model)
    assert "cycle: a -> b -> e -> a" in str(e.value)
    assert "c ->" not in str(e.value)


# ---- generation-time validation --------------------------------------------------

URL = "http://10.77.0.1:8091/v1/guest/instances/web-0"
TOKEN = "a3f1" * 16


def script_for(exts: list[instancespec.Extension], **kw: Any) -> str:
    args: dict[str, Any] = {
        "instance": INSTANCE,
        "instance_id": INSTANCE_ID,
        "extensions": exts,
        "report_url": URL,
        "token": TOKEN,
        "custom_data": None,
    }
    args.update(kw)
    return extensions.user_data_script(**args)


def test_custom_script_without_command_or_script_is_rejected() -> None:
    bad = instancespec.Extension(name="setup", settings={"timestamp": 1})
    with pytest.raises(ValueError, match=r"'setup'.*commandToExecute or script"):
        script_for([bad])


def test_custom_script_with_both_keys_in_one_place_is_rejected() -> None:
    bad = instancespec.Extension(
        name="setup", protectedSettings={"commandToExecute": "x", "script": b64("y")}
    )
    with pytest.raises(ValueError, match="'setup': protectedSettings has both"):
        script_for([bad])


def test_invalid_script_base64_is_rejected_without_echoing_it() -> None:
    bad = instancespec.Extension(name="setup", protectedSettings={"script": "s3cr3t!!not-base64"})
    with pytest.raises(ValueError, match=r"protectedSettings\.script is not valid base64") as e:
        script_for([bad])
    assert "s3cr3t" not in str(e.value)


def test_invalid_custom_data_is_rejected() -> None:
    with pytest.raises(ValueError, match="customData is not valid base64"):
        script_for([], custom_data="%%%")


def test_bad_token_is_rejected_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="token") as e:
        script_for([], token='evil"token\n')
    assert "evil" not in str(e.value)


def test_report_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="report_url"):
        script_for([], report_url="file:///etc/passwd")


def test_reserved_extension_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="'status': the name is reserved"):
        script_for([ext("status")])


def test_fileuris_is_rejected() -> None:
    bad = instancespec.Extension(
        name="setup", settings={"fileUris": ["http://x/y.sh"], "commandToExecute": "sh y.sh"}
    )
    with pytest.raises(ValueError, match=r"settings\.fileUris is not supported"):
        script_for([bad])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"protocol": "udp", "port": 80}, "protocol must be"),
        ({"protocol": "http"}, "port must be an integer"),
        ({"protocol": "tcp", "port": 70000}, "port must be an integer"),
        ({"protocol": "http", "port": True}, "port must be an integer"),
        ({"protocol": "http", "port": 80, "requestPath": "/a b"}, "requestPath must be"),
        ({"protocol": "http", "port": 80, "intervalInSeconds": 0}, "intervalInSeconds"),
    ],
)
def test_health_settings_are_checked(settings: dict[str, Any], message: str) -> None:
    bad = instancespec.Extension(name="health", type="ApplicationHealthLinux", settings=settings)
    with pytest.raises(ValueError, match=f"'health': settings.*{message}"):
        script_for([bad])


def test_user_text_never_appears_as_shell_text() -> None:
    command = "echo '$(reboot)'; `halt` \"$HOME\" ; exit 0 # marker-123"
    script = script_for(
        [instancespec.Extension(name="x", settings={"commandToExecute": command})],
        custom_data=b64("customdata-marker"),
    )
    assert script.startswith("#!/bin/sh\n")
    for raw in (command, "marker-123", "customdata-marker", TOKEN, INSTANCE_ID, URL):
        assert raw not in script


def test_generated_scripts_pass_shellcheck(tmp_path: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    health = instancespec.Extension(
        name="h", type="ApplicationHealthLinux", settings={"protocol": "http", "port": 80}
    )
    main = script_for([ext("a"), health], custom_data=b64("x"))
    call = next(line for line in main.splitlines() if line.startswith("kvmss_extension 2 "))
    (tmp_path / "main.sh").write_text(main)
    (tmp_path / "health.sh").write_bytes(base64.b64decode(call.split()[4].strip("'")))
    checked = subprocess.run(
        [shellcheck, "-s", "sh", str(tmp_path / "main.sh"), str(tmp_path / "health.sh")],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout
