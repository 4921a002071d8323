"""What the lab tells its user to run next: the ``kvmss`` command as typed
from here, how to take a lab down, and how to look around one."""

from __future__ import annotations

import sys
from pathlib import Path

from kvmss.lab.files import resolve_dir
from kvmss.lab.state import LabState


def kvmss_command() -> str:
    """How to run this ``kvmss`` from the current directory."""
    exe = Path(sys.executable).parent / "kvmss"
    if not exe.exists():
        return "kvmss"
    try:
        rel = exe.relative_to(Path.cwd())
    except ValueError:
        return str(exe)
    return str(rel)


def dir_option(root: Path) -> str:
    return "" if root == resolve_dir(None) else f" --dir {root}"


def take_down(root: Path) -> str:
    """The command that removes the lab at ``root``."""
    command = f"{kvmss_command()} lab down{dir_option(root)}"
    return f"make demo-down (or {command})" if root == resolve_dir(None) else command


def look_around(state: LabState) -> str:
    k = kvmss_command()
    name = state.scale_set
    logs = ", ".join(str(p.log) for p in (state.controller, *map(state.host, state.hosts)))
    return "\n".join(
        [
            "The lab keeps running. Look around:",
            f"  export KVMSS_URL={state.url}",
            f"  export KVMSS_TOKEN_FILE={state.controller.token}",
            f"  {k} vmss list-instances {name}",
            f"  {k} vmss rolling-upgrade get-latest {name}",
            f"  {k} vmss get-os-upgrade-history {name}",
            f"  {k} host list",
            f"  {k} lab status{dir_option(state.root)}",
            f"dashboard: {state.url}/ui/ (sign in with the token in the token file)",
            f"API: {state.url} (OpenAPI document: {state.url}/openapi.json)",
            f"token file: {state.controller.token}",
            f"logs: {logs}",
            f"Take it down with: {take_down(state.root)}",
        ]
    )
