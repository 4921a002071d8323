"""The names both sides accept: instances, extensions, image parts, operation
ids, admin accounts and SSH keys, each a pattern and, where a message must
say why, a check that raises ValueError.
"""

from __future__ import annotations

import re

from hostagent.contract import limits

# Instance names become file names and libvirt domain names: a DNS label.
INSTANCE_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
EXTENSION_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
IMAGE_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
OPERATION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# A Linux user name cloud-init can create; the accounts of a Debian base
# system are refused (cloud-init would change root's or a daemon's login).
ADMIN_USERNAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
RESERVED_USERNAMES = frozenset(
    {"root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp",
     "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody", "_apt", "messagebus",
     "sshd", "systemd-network", "systemd-resolve", "systemd-timesync", "polkitd"}
)  # fmt: skip
# One OpenSSH public key line: type, base64 blob, optional comment.
SSH_PUBLIC_KEY_RE = re.compile(
    r"^(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp(?:256|384|521)"
    r"|sk-(?:ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
    r" [A-Za-z0-9+/]+={0,3}(?: [^\x00-\x1f\x7f]*)?$"
)


def check_instance_name(name: str) -> str:
    """Return ``name`` or raise ValueError saying why it is not an instance name."""
    if not INSTANCE_NAME_RE.fullmatch(name):
        raise ValueError(
            f"instance name {name[:80]!r} is invalid: use 1-63 lowercase letters, digits"
            " and '-', starting and ending with a letter or digit"
        )
    return name


def check_admin_username(name: str) -> str:
    """Return ``name`` or raise ValueError saying why cloud-init must not create it."""
    if not ADMIN_USERNAME_RE.fullmatch(name):
        raise ValueError(
            "adminUsername must be 1-32 lowercase letters, digits, '_' or '-',"
            " starting with a letter or '_'"
        )
    if name in RESERVED_USERNAMES:
        raise ValueError(f"adminUsername {name!r} is a system account; choose another name")
    return name


def check_ssh_public_key(key: str, index: int) -> str:
    """Return ``key`` or raise ValueError (naming its index, never its text)."""
    if len(key) > limits.SSH_PUBLIC_KEY_MAX_LENGTH or not SSH_PUBLIC_KEY_RE.fullmatch(key):
        raise ValueError(
            f"sshPublicKeys[{index}] must be one OpenSSH public key line"
            " such as 'ssh-ed25519 AAAA... comment'"
        )
    return key


def check_operation_id(op_id: str | None) -> str | None:
    """Return ``op_id`` (None: the agent picks one) or raise ValueError."""
    if op_id is not None and not OPERATION_ID_RE.fullmatch(op_id):
        raise ValueError("must be 1-64 letters, digits, '_' or '-'")
    return op_id
