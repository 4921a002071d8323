"""A wheelhouse of kvmss's runtime dependencies at the versions installed in
the test venv (plus the build backend), for ``install-kvmss.sh --find-links``
on a host that cannot reach PyPI: the SSH tests' network namespace has no
route out.

Built once by ``pip wheel`` (downloads from PyPI, libvirt-python from pip's
wheel cache or built) and kept under the test root as
``wheelhouse-<hash of the pins>``, so later runs reuse it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from tests.fixtures import TEST_ROOT

BUILD_BACKEND = ("setuptools>=68", "wheel")


def runtime_pins(dist: str = "kvmss") -> list[str]:
    """``name==version`` for every runtime dependency of ``dist``, transitively
    (extras and other platforms' markers left out)."""
    pins: dict[str, str] = {}
    todo = [dist]
    while todo:
        for text in metadata.requires(todo.pop()) or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            key = req.name.lower().replace("_", "-")
            if key not in pins:
                pins[key] = metadata.version(req.name)
                todo.append(req.name)
    return sorted(f"{k}=={v}" for k, v in pins.items())


def wheelhouse() -> Path:
    reqs = [*runtime_pins(), *BUILD_BACKEND]
    tag = hashlib.sha256("\n".join(reqs).encode()).hexdigest()[:12]
    final = TEST_ROOT / f"wheelhouse-{tag}"
    if final.is_dir():
        return final
    TEST_ROOT.mkdir(parents=True, exist_ok=True)
    tmp = TEST_ROOT / f".wheelhouse-{tag}-{os.getpid()}"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(tmp), *reqs],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"pip wheel failed: {r.stderr[-2000:]}")
    os.chmod(tmp, 0o755)
    try:
        tmp.rename(final)
    except OSError:  # another run made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return final
