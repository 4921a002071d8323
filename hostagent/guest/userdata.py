"""NoCloud ``user-data``: a MIME multipart cloud-init reads, and the tiny image too.

Two parts, in this order:

- ``text/cloud-config``: the admin user with its ssh keys and sudo, password
  logins off. Real cloud-init applies it; the tiny image (no sshd, no users)
  skips it.
- ``text/x-shellscript``: the kvmss script that runs the extensions and
  reports to the host agent (:func:`hostagent.guest.extensions.user_data_script`).
  cloud-init runs it once per instance-id (``scripts_user``), as the tiny
  image's init does.

Parts are ASCII written ``7bit``, never base64, so the tiny image's awk
reader (images/tiny/guest/rootfs/usr/libexec/kvmss/mime-part.awk) reads them
without a decoder; both parts are ASCII by construction (the script carries
every model value as base64, PyYAML escapes non-ASCII). The boundary is
random, so no part can contain it by accident, and is checked anyway.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import yaml

from hostagent.contract import names

CLOUD_CONFIG = "text/cloud-config"
SHELL_SCRIPT = "text/x-shellscript"


@dataclass(frozen=True)
class Part:
    content_type: str  # "text/cloud-config" or "text/x-shellscript"
    filename: str
    # Scripts carry the report token and cloud-config the keys: out of repr.
    text: str = field(repr=False)


def cloud_config(admin_username: str | None, ssh_public_keys: Sequence[str]) -> str:
    """``#cloud-config`` creating ``admin_username`` (passwordless sudo, login
    by key only) with ``ssh_public_keys``. Without an admin user the keys go to
    the image's default user, as cloud-init does for top-level keys."""
    if admin_username is not None:
        names.check_admin_username(admin_username)
    keys = [names.check_ssh_public_key(k, i) for i, k in enumerate(ssh_public_keys)]
    config: dict[str, object] = {"ssh_pwauth": False, "disable_root": True}
    if admin_username is not None:
        user: dict[str, object] = {
            "name": admin_username,
            "gecos": "kvmss admin user",
            "groups": ["sudo"],
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "shell": "/bin/bash",
            "lock_passwd": True,
        }
        if keys:
            user["ssh_authorized_keys"] = keys
        config["users"] = [user]
    elif keys:
        config["ssh_authorized_keys"] = keys
    body = yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=1 << 20)
    return "#cloud-config\n" + body


def multipart(parts: Sequence[Part], boundary: str | None = None) -> str:
    """``parts`` as one ``multipart/mixed`` document (RFC 2046), 7bit."""
    if not parts:
        raise ValueError("user-data needs at least one part")
    boundary = boundary or f"kvmss-{secrets.token_hex(16)}"
    delimiter = f"--{boundary}"
    out = [
        "MIME-Version: 1.0\n",
        f'Content-Type: multipart/mixed; boundary="{boundary}"\n',
        "\n",
    ]
    for part in parts:
        if part.content_type not in (CLOUD_CONFIG, SHELL_SCRIPT):
            raise ValueError(f"user-data part type {part.content_type!r} is not supported")
        if not part.filename.replace("-", "").replace(".", "").isalnum():
            raise ValueError(f"user-data part filename {part.filename!r} is not a plain name")
        if not part.text.isascii():
            raise ValueError(f"user-data part {part.filename!r} is not ASCII")
        if any(line.startswith(delimiter) for line in part.text.splitlines()):
            raise ValueError("a user-data part contains the MIME boundary")
        text = part.text if part.text.endswith("\n") else part.text + "\n"
        out += [
            f"{delimiter}\n",
            f'Content-Type: {part.content_type}; charset="us-ascii"\n',
            "MIME-Version: 1.0\n",
            "Content-Transfer-Encoding: 7bit\n",
            f'Content-Disposition: attachment; filename="{part.filename}"\n',
            "\n",
            text,
        ]
    out.append(f"{delimiter}--\n")
    return "".join(out)


def user_data(
    *, admin_username: str | None, ssh_public_keys: Sequence[str], extensions_script: str
) -> str:
    """The user-data of one OS disk generation: cloud-config, then the script."""
    return multipart(
        [
            Part(CLOUD_CONFIG, "cloud-config.yaml", cloud_config(admin_username, ssh_public_keys)),
            Part(SHELL_SCRIPT, "kvmss-extensions.sh", extensions_script),
        ]
    )
