"""What a join uploads: a kvmss wheel (built from this source checkout, or
given), the install script and the agent's unit file, and where the host's
pip takes dependencies from."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import kvmss
from kvmss.hostjoin.layout import AGENT_UNIT
from kvmss.hostjoin.steps import JoinError, Say
from kvmss.hostjoin.unitfile import check_path

_SKIP = {".git", ".venv", "build", "dist", "node_modules", "__pycache__", ".vagrant"}
_SKIP_SUFFIXES = (".egg-info", "_cache")


@dataclass(frozen=True)
class Sources:
    """The files a join uploads, found in the source checkout kvmss runs
    from, and where the host's pip takes dependencies from: PyPI, or only
    the wheelhouse ``find_links`` (a directory on the host)."""

    checkout: Path | None
    wheel: Path | None = None
    find_links: PurePosixPath | None = None

    @classmethod
    def find(cls, wheel: Path | None = None, find_links: str | None = None) -> Sources:
        """ValueError names a bad --find-links."""
        root = Path(kvmss.__file__).resolve().parent.parent
        checkout = root if (root / "pyproject.toml").is_file() else None
        links = check_path(find_links, "--find-links") if find_links is not None else None
        return cls(checkout, wheel, links)

    @property
    def install_script(self) -> Path:
        script = self.checkout / "scripts" / "install-kvmss.sh" if self.checkout else None
        if script is None or not script.is_file():
            raise JoinError(
                "scripts/install-kvmss.sh not found: kvmss does not run from a source checkout"
            )
        return script

    @property
    def agent_unit(self) -> Path | None:
        unit = self.checkout / "systemd" / AGENT_UNIT if self.checkout else None
        return unit if unit is not None and unit.is_file() else None

    def the_wheel(self, workdir: Path, say: Say) -> Path:
        if self.wheel is not None:
            return self.wheel
        if self.checkout is None:
            raise JoinError("no source checkout to build kvmss from: give --wheel FILE")
        say(f"building a kvmss wheel from {self.checkout}")
        return build_wheel(self.checkout, workdir)


def _ignore(_dir: str, names: list[str]) -> set[str]:
    return {n for n in names if n in _SKIP or n.endswith(_SKIP_SUFFIXES)}


def build_wheel(checkout: Path, workdir: Path) -> Path:
    """A wheel of ``checkout``, built from a copy (pip builds in the tree it
    is given, and others may be working in this one)."""
    src, out = workdir / "src", workdir / "wheel"
    shutil.copytree(checkout, src, ignore=_ignore, symlinks=True)
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(out)]
    try:
        r = subprocess.run(
            [*cmd, str(src)], capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise JoinError(f"building the kvmss wheel: {e}") from None
    wheels = sorted(out.glob("kvmss-*.whl"))
    if r.returncode != 0 or not wheels:
        tail = " | ".join(r.stderr.strip().splitlines()[-3:])
        raise JoinError(f"building the kvmss wheel failed (pip wheel: {tail}); give --wheel FILE")
    return wheels[0]
