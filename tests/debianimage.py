"""The Debian image for guest tests: versions built (or reused) under
build/images/debian-<v>, their ImageSpec for an agent, the ssh host keys a
guest prints on its console, and an ssh session that trusts only those.

Builds go through :func:`images.debian.build.build`, which locks the output
directory and the root filesystem cache, so test modules (or test runs) that
ask for the same version at the same time build it once and the others wait
for it. The first build of a checkout makes the cached tree (debootstrap and
packages, minutes); each version after that takes seconds.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from hostagent.contract import instancespec
from images.debian import build as debian_build
from tests.agentproc import REPO

IMAGES = REPO / "build" / "images"
VERSIONS = ("1", "2")
OFFER = "debian"
# What a Debian guest needs under TCG: 2 vCPUs and 1 GiB boot it to
# "cloud-init done" in about a minute on an idle build machine (256 MiB, the
# agent's default, runs out of memory in cloud-init).
VCPUS = 2
MEMORY_MB = 1024

_KEYS_BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
_KEYS_END = "-----END SSH HOST KEY KEYS-----"
_KEY_LINE = re.compile(r"((?:ssh|ecdsa)-[a-z0-9-]+) ([A-Za-z0-9+/]+={0,3})(?:\s|$)")


@dataclass(frozen=True)
class BuiltImage:
    version: str
    directory: Path
    seconds: float  # this call's build time (near 0 when reused)


def image_dir(version: str, boot: str = "kernel") -> Path:
    """build/images/debian-<v> (debian-fw-<v> for firmware boot)."""
    return IMAGES / (f"debian-{version}" if boot == "kernel" else f"debian-fw-{version}")


def debian_images(versions: Iterable[str] = VERSIONS, boot: str = "kernel") -> list[BuiltImage]:
    """Build (or reuse) each Debian image version into :func:`image_dir`."""
    built = []
    for v in versions:
        started = time.monotonic()
        debian_build.build(v, image_dir(v, boot), boot=boot)
        built.append(BuiltImage(v, image_dir(v, boot), time.monotonic() - started))
    return built


def debian_image(version: str, boot: str = "kernel") -> Path:
    """Build (or reuse) one Debian image version; its directory."""
    return debian_images([version], boot)[0].directory


# Every Debian image the guest tests boot, as (version, boot).
GUEST_TEST_IMAGES = (("1", "kernel"), ("2", "kernel"), ("1", "firmware"))


def prebuild() -> None:
    """Build (or reuse) :data:`GUEST_TEST_IMAGES`, printing each build time.

    ``make test`` runs this in the background while lint and the no-guest
    tests run, so the cold build (debootstrap) is off the guest tests' path;
    their own builds then find the images made (or wait on the build lock)."""
    for version, boot in GUEST_TEST_IMAGES:
        (b,) = debian_images([version], boot)
        print(f"{b.directory.name}: {b.seconds:.1f} s", flush=True)


def image_spec(base_url: str, image_dir: Path) -> instancespec.ImageSpec:
    """The ImageSpec of a built Debian image served at ``base_url`` (which
    serves the parent directory of ``image_dir``); a firmware-boot image
    has no kernel in its spec, so the agent boots its disk."""
    m: dict[str, Any] = json.loads((image_dir / "manifest.json").read_text())

    def art(key: str) -> instancespec.Artifact:
        return instancespec.Artifact(
            url=f"{base_url}/{image_dir.name}/{m[key]['file']}", sha256=m[key]["sha256"]
        )

    disk = art("disk")
    ref = instancespec.ImageReference(publisher="kvmss", offer=OFFER, sku="1", version=m["version"])
    if m.get("boot", "kernel") == "firmware":
        return instancespec.ImageSpec(reference=ref, url=disk.url, sha256=disk.sha256)
    return instancespec.ImageSpec(
        reference=ref,
        url=disk.url,
        sha256=disk.sha256,
        kernel=art("kernel"),
        initrd=art("initrd"),
        cmdline=m["cmdline"],
    )


def console_host_keys(console: str) -> list[tuple[str, str]]:
    """(key type, base64) of the ssh host keys cloud-init printed between
    ``-----BEGIN SSH HOST KEY KEYS-----`` and its END line, in the last such
    block of the console log (the latest boot)."""
    start = console.rfind(_KEYS_BEGIN)
    if start < 0:
        return []
    end = console.find(_KEYS_END, start)
    block = console[start + len(_KEYS_BEGIN) : end if end >= 0 else None]
    return [(m.group(1), m.group(2)) for m in _KEY_LINE.finditer(block)]


def generate_user_key() -> tuple[paramiko.PKey, str]:
    """A new ECDSA key pair for the admin user: the key and its public line."""
    key = paramiko.ECDSAKey.generate()
    return key, f"{key.get_name()} {key.get_base64()} kvmss-test"


@contextmanager
def ssh_session(
    address: str, username: str, key: paramiko.PKey, host_keys: Iterable[tuple[str, str]]
) -> Iterator[paramiko.SSHClient]:
    """An ssh connection that accepts only ``host_keys`` for ``address``
    (anything else is rejected, never added)."""
    client = paramiko.SSHClient()
    known = client.get_host_keys()
    for kind, blob in host_keys:
        known.add(address, kind, paramiko.PKey.from_type_string(kind, base64.b64decode(blob)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        address,
        username=username,
        pkey=key,
        look_for_keys=False,
        allow_agent=False,
        timeout=30,
        banner_timeout=60,
        auth_timeout=60,
    )
    try:
        yield client
    finally:
        client.close()


def ssh_run(client: paramiko.SSHClient, command: str, timeout: float = 60) -> tuple[int, str]:
    """Exit status and stdout+stderr of ``command`` run over ``client``."""
    transport = client.get_transport()
    assert transport is not None, "the ssh session is closed"
    chan = transport.open_session(timeout=timeout)
    try:
        chan.set_combine_stderr(True)
        chan.settimeout(timeout)
        chan.exec_command(command)
        out = chan.makefile("rb").read().decode(errors="replace")
        return chan.recv_exit_status(), out
    finally:
        chan.close()


if __name__ == "__main__":
    prebuild()
