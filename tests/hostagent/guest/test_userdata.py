"""user-data as a MIME multipart: what cloud-init's parser, `cloud-init schema`
and the tiny image's awk reader each make of it."""

from __future__ import annotations

import email
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hostagent.contract import instancespec
from hostagent.guest import extensions, userdata

MIME_PART_AWK = (
    Path(__file__).parents[3] / "images/tiny/guest/rootfs/usr/libexec/kvmss/mime-part.awk"
)
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPq5Kd7qGk4i7w9i4Jv1Kq0 ops@example"
TOKEN = "tok-SECRET-abc123"


def _script() -> str:
    return extensions.user_data_script(
        instance="web-0",
        instance_id="i-web-0-g1-abcdef",
        extensions=[
            instancespec.Extension(
                name="hello",
                type="CustomScript",
                settings={"commandToExecute": "echo ünïcode > /tmp/x"},
            )
        ],
        report_url="http://10.77.0.1:8091/v1/guest/instances/web-0",
        token=TOKEN,
        custom_data=None,
    )


def _parts(document: str) -> dict[str, bytes]:
    # cloud-init reads user-data as bytes (message_from_bytes).
    msg = email.message_from_bytes(document.encode())
    assert msg.get_content_type() == "multipart/mixed"
    out: dict[str, bytes] = {}
    for part in msg.walk():
        if not part.is_multipart():
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            out[part.get_content_type()] = payload
    return out


def test_parts_are_the_cloud_config_then_the_script_byte_for_byte() -> None:
    script = _script()
    doc = userdata.user_data(
        admin_username="azureuser", ssh_public_keys=[KEY], extensions_script=script
    )
    assert doc.isascii()
    assert list(_parts(doc)) == ["text/cloud-config", "text/x-shellscript"]
    parts = _parts(doc)
    # The newline before a delimiter belongs to the delimiter (RFC 2046).
    assert parts["text/x-shellscript"].decode() + "\n" == script
    config = yaml.safe_load(parts["text/cloud-config"])
    assert parts["text/cloud-config"].startswith(b"#cloud-config\n")
    assert config["ssh_pwauth"] is False
    (user,) = config["users"]
    assert user["name"] == "azureuser"
    assert user["ssh_authorized_keys"] == [KEY]
    assert user["lock_passwd"] is True


def test_without_admin_user_keys_go_to_the_default_user() -> None:
    config = yaml.safe_load(userdata.cloud_config(None, [KEY]))
    assert "users" not in config
    assert config["ssh_authorized_keys"] == [KEY]
    assert "ssh_authorized_keys" not in yaml.safe_load(userdata.cloud_config(None, []))


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="cloud-init is a setup.sh package")
@pytest.mark.parametrize(
    ("admin", "keys"), [("azureuser", [KEY]), (None, [KEY]), ("ops", []), (None, [])]
)
def test_cloud_config_part_validates_with_cloud_init_schema(
    tmp_path: Path, admin: str | None, keys: list[str]
) -> None:
    doc = userdata.user_data(
        admin_username=admin, ssh_public_keys=keys, extensions_script="#!/bin/sh\n"
    )
    path = tmp_path / "cloud-config.yaml"
    path.write_bytes(_parts(doc)["text/cloud-config"])
    proc = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Valid cloud-config" in proc.stdout


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason="cloud-init is a setup.sh package")
def test_cloud_init_schema_catches_an_invalid_config(tmp_path: Path) -> None:
    # The schema check can fail: a wrong type for ssh_pwauth's sibling keys.
    path = tmp_path / "bad.yaml"
    path.write_text("#cloud-config\nusers: 7\n")
    proc = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True
    )
    assert proc.returncode != 0


def _awk(document: str, content_type: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["busybox", "awk", "-v", f"type={content_type}", "-f", str(MIME_PART_AWK)],
        input=document,
        capture_output=True,
        text=True,
    )


def test_tiny_image_awk_reader_extracts_the_script_as_python_does() -> None:
    doc = userdata.user_data(
        admin_username="azureuser", ssh_public_keys=[KEY], extensions_script=_script()
    )
    proc = _awk(doc, "text/x-shellscript")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == _parts(doc)["text/x-shellscript"].decode() + "\n"
    config = _awk(doc, "text/cloud-config")
    assert config.stdout.startswith("#cloud-config\n")
    assert _awk(doc, "text/html").returncode == 1
    assert _awk("#!/bin/sh\necho not mime\n", "text/x-shellscript").returncode == 1


def test_tiny_image_awk_reader_handles_crlf_and_refuses_base64() -> None:
    crlf = (
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/x-shellscript\r\n\r\n#!/bin/sh\r\necho two\r\n--b1--\r\n"
    )
    assert _awk(crlf, "text/x-shellscript").stdout == "#!/bin/sh\necho two\n"
    b64 = crlf.replace(
        "Content-Type: text/x-shellscript\r\n",
        "Content-Type: text/x-shellscript\r\nContent-Transfer-Encoding: base64\r\n",
    )
    assert _awk(b64, "text/x-shellscript").returncode == 2


def test_bad_user_names_and_keys_are_refused_without_echoing_the_key() -> None:
    with pytest.raises(ValueError, match="adminUsername"):
        userdata.cloud_config("Bad Name", [])
    with pytest.raises(ValueError, match="system account"):
        userdata.cloud_config("root", [])
    secret_ish = "ssh-ed25519 AAAA\nextra-line-injection"
    with pytest.raises(ValueError, match=r"sshPublicKeys\[1\]") as err:
        userdata.cloud_config("ops", [KEY, secret_ish])
    assert "injection" not in str(err.value)


def test_a_part_holding_the_boundary_or_non_ascii_is_refused() -> None:
    part = userdata.Part(userdata.SHELL_SCRIPT, "x.sh", "#!/bin/sh\n--kvmss-b\n")
    with pytest.raises(ValueError, match="boundary"):
        userdata.multipart([part], boundary="kvmss-b")
    with pytest.raises(ValueError, match="not ASCII"):
        userdata.multipart([userdata.Part(userdata.SHELL_SCRIPT, "x.sh", "echo ü\n")])


def test_wire_refuses_bad_admin_user_and_keys() -> None:
    with pytest.raises(ValueError, match="system account"):
        instancespec.OsProfile(computerName="web", adminUsername="root")
    with pytest.raises(ValueError, match="sshPublicKeys"):
        instancespec.OsProfile(computerName="web", sshPublicKeys=["not a key"])
    profile = instancespec.OsProfile(computerName="web", adminUsername="ops", sshPublicKeys=[KEY])
    assert KEY not in repr(profile)
