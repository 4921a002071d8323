"""``kvmss image build NAME``: build a base image from its recipe in the
source checkout, and publish an image directory to the controller.

Recipes live in ``images/<name>/build.py`` of the source checkout, which is
not an installed package: the build runs ``python -m images.<name>.build``
with the checkout as its working directory, found next to this package
(``kvmss/..``). An installed kvmss without its checkout cannot build images
and says so.

An image directory is what a recipe writes: ``disk.qcow2``, ``vmlinuz``,
``initrd.img`` and ``manifest.json``. :func:`publish` is the one way kvmss
puts one into the catalog (``kvmss image build --publish``, ``kvmss lab``).
"""

from __future__ import annotations

import subprocess
import sys
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import kvmss
from kvmss.base import atomicfile
from kvmss.client.api import ApiClient, path_of

IMAGE_NAMES = ("tiny", "debian")
FIRMWARE_BOOT_IMAGES = ("debian",)
CHECKOUT = Path(kvmss.__file__).resolve().parent.parent
# The image reference a build is published as, unless told otherwise:
# kvmss:<name>:1:<version> (the lab publishes kvmss:tiny:1).
DEFAULT_PUBLISHER = "kvmss"
DEFAULT_SKU = "1"
_TAIL_LINES = 20


class ImageBuildError(Exception):
    """A build could not run or failed; the message says which and why."""


def checkout(root: Path = CHECKOUT) -> Path:
    """The source checkout holding the recipes, or ImageBuildError."""
    if not (root / "images" / "tiny" / "build.py").is_file():
        raise ImageBuildError(
            f"building images needs the kvmss source checkout (images/<name>/build.py);"
            f" there is none at {root}: run kvmss from a checkout (pip install -e .)"
        )
    return root


def default_out(name: str, version: str, boot: str | None = None, root: Path = CHECKOUT) -> Path:
    """``build/images/<name>-<version>`` in the checkout (``<name>-fw-<version>``
    for a firmware-boot build, so the two variants of a version can coexist)."""
    variant = f"{name}-fw" if boot == "firmware" else name
    return root / "build" / "images" / f"{variant}-{version}"


def _check_name(name: str, root: Path) -> None:
    if name not in IMAGE_NAMES:
        raise ImageBuildError(f"image {name!r} is unknown: use one of {', '.join(IMAGE_NAMES)}")
    if not (root / "images" / name / "build.py").is_file():
        raise ImageBuildError(f"image {name!r}: {root}/images/{name}/build.py is missing")


def build(
    name: str,
    version: str,
    out: Path | None = None,
    *,
    boot: str | None = None,
    on_line: Callable[[str], None] | None = None,
    root: Path | None = None,
) -> Path:
    """Build version ``version`` of image ``name`` into ``out`` (default
    :func:`default_out`) and return the directory.

    ``boot`` (``kernel`` or ``firmware``) goes to recipes that have both
    (debian); ``on_line`` gets each line the build prints about its
    progress. A recipe that fails raises ImageBuildError with its last line
    (the reason).
    """
    root = checkout(root or CHECKOUT)
    _check_name(name, root)
    if boot is not None and name not in FIRMWARE_BOOT_IMAGES:
        raise ImageBuildError(f"image {name!r} boots only with its kernel (no --boot)")
    target = (out or default_out(name, version, boot, root)).expanduser().resolve()
    cmd = [
        sys.executable,
        "-m",
        f"images.{name}.build",
        "--version",
        version,
        "--out",
        str(target),
        *(["--boot", boot] if boot is not None else []),
    ]
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # the manifest; read from the directory instead
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
    except OSError as e:
        raise ImageBuildError(f"cannot run {sys.executable}: {e.strerror}") from None
    assert proc.stderr is not None
    with proc:
        for line in proc.stderr:
            line = line.rstrip("\n")
            tail.append(line)
            if on_line is not None:
                on_line(line)
    if proc.returncode != 0:
        # The recipe's error is its last line, "images.<name>.build: <why>";
        # argparse says "error: ..." in its last line too.
        last = next((t for t in reversed(tail) if t.strip()), "no output")
        raise ImageBuildError(
            f"building {name} {version} failed (exit code {proc.returncode}): {last.strip()}"
        )
    return target


def read_manifest(image_dir: Path) -> Mapping[str, Any]:
    """The manifest of an image directory, checked for what publishing needs."""
    path = image_dir / "manifest.json"
    try:
        manifest = atomicfile.read_json(path)
    except FileNotFoundError:
        raise ImageBuildError(f"{path} does not exist: not an image directory") from None
    except ValueError as e:
        raise ImageBuildError(f"{path}: not JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise ImageBuildError(f"{path}: must be a JSON object")
    boot = manifest.get("boot", "kernel")
    needed = ("disk", "kernel", "initrd") if boot == "kernel" else ("disk",)
    for part in needed:
        entry = manifest.get(part)
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise ImageBuildError(f"{path}: {part}.file is missing")
        if not (image_dir / entry["file"]).is_file():
            raise ImageBuildError(f"{path}: {part} file {entry['file']} is missing")
    if boot == "kernel" and not isinstance(manifest.get("cmdline"), str):
        raise ImageBuildError(f"{path}: cmdline is missing")
    if boot not in ("kernel", "firmware"):
        raise ImageBuildError(f"{path}: boot must be 'kernel' or 'firmware', not {boot!r}")
    return manifest


def publish(
    client: ApiClient,
    image_dir: Path,
    publisher: str,
    offer: str,
    sku: str,
    version: str,
) -> Any:
    """Publish an image directory as ``publisher:offer:sku:version`` and
    return the catalog's manifest: for direct kernel boot the kernel and
    initrd are staged first, then the disk upload (with the kernel command
    line) publishes; a firmware-boot image is its disk alone."""
    manifest = read_manifest(image_dir)
    base = path_of("images", publisher, offer, sku, version)
    # The disk's sha256 from the build: the catalog refuses an upload that
    # arrives different (a cut the qcow2 check cannot see).
    disk = image_dir / manifest["disk"]["file"]
    digest = manifest["disk"].get("sha256")
    sha = {"sha256": digest} if isinstance(digest, str) else {}
    if manifest.get("boot", "kernel") == "firmware":
        return client.upload(base, disk, sha)
    for part in ("kernel", "initrd"):
        client.upload(f"{base}/{part}", image_dir / manifest[part]["file"])
    return client.upload(base, disk, {"cmdline": manifest["cmdline"], **sha})
