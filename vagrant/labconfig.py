"""Writes the Vagrant lab's /etc/kvmss/controller.yaml and agent.yaml.

The provisioning scripts run this with the installed venv's Python, so the
YAML comes from a YAML library (never from shell concatenation) and is loaded
back through the daemons' own configuration classes before it is written: a
setting the daemon would refuse stops the provisioning here, with the
daemon's own message, instead of as a unit that fails to start.

Prints one word on stdout, ``changed`` or ``unchanged``, so the caller
restarts the daemon only when its settings moved. The files name a token
file and never hold a token.

    labconfig.py controller --listen 10.88.0.10:8080 --public-url URL --out FILE
    labconfig.py agent --name host1 --listen 10.88.0.11:8090 --subnet 10.77.1.0/24 --out FILE
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from hostagent.daemon.config import AgentConfig
from kvmss.base import atomicfile
from kvmss.base.configfile import ConfigError

HEADER = "# Written by vagrant/labconfig.py when the lab VM was provisioned.\n"


def controller_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "listen": args.listen,
        "token_file": str(args.token_file),
        "database": "/var/lib/kvmss/controller/kvmss.db",
        "blob_dir": "/var/lib/kvmss/controller/images",
        "public_url": args.public_url,
    }


def agent_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": args.name,
        "listen": args.listen,
        "token_file": str(args.token_file),
        "libvirt_uri": "qemu:///system",
        "storage_dir": "/var/lib/kvmss/agent",
        "bridge": {"name": "kvmss0", "subnet": args.subnet},
        "guest_port": 8091,
        "shutdown_timeout": 30,
    }


def check(kind: str, settings: dict[str, Any]) -> None:
    """Raises ConfigError where the daemon itself would refuse ``settings``."""
    if kind == "controller":
        # Lazy: the controller's web stack need not load to check an agent's file
        from controller.daemon.server import ControllerConfig

        cfg = ControllerConfig.from_dict(settings)
        if cfg.host in ("0.0.0.0", "::", ""):
            raise ConfigError("listen: give the lab network's address, not a wildcard")
    else:
        agent = AgentConfig.from_dict(settings)
        # The management API must not be reachable from the guests' bridge.
        if agent.listen_host in ("0.0.0.0", "::", ""):
            raise ConfigError("listen: give the lab network's address, not a wildcard")


def write(settings: dict[str, Any], out: Path) -> bool:
    """Writes ``settings`` to ``out`` (mode 0644) unless it already holds them."""
    text = HEADER + yaml.safe_dump(settings, sort_keys=False, default_flow_style=False)
    try:
        if out.read_text() == text:
            return False
    except FileNotFoundError:
        pass
    atomicfile.write_bytes(out, text.encode(), mode=0o644)
    return True


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="labconfig.py", description="Write the Vagrant lab's kvmss configuration."
    )
    sub = p.add_subparsers(dest="kind", required=True)
    ctl = sub.add_parser("controller", help="/etc/kvmss/controller.yaml")
    ctl.add_argument("--listen", required=True, help="ADDRESS:PORT on the lab network")
    ctl.add_argument("--public-url", required=True, help="how the agents reach the controller")
    ctl.add_argument("--token-file", type=Path, default=Path("/etc/kvmss/controller.token"))
    ctl.add_argument("--out", type=Path, default=Path("/etc/kvmss/controller.yaml"))
    agent = sub.add_parser("agent", help="/etc/kvmss/agent.yaml")
    agent.add_argument("--name", required=True, help="the host's name, as registered")
    agent.add_argument("--listen", required=True, help="ADDRESS:PORT on the lab network")
    agent.add_argument("--subnet", required=True, help="the guests' bridge subnet")
    agent.add_argument("--token-file", type=Path, default=Path("/etc/kvmss/agent.token"))
    agent.add_argument("--out", type=Path, default=Path("/etc/kvmss/agent.yaml"))
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    kind: str = args.kind
    settings = controller_settings(args) if kind == "controller" else agent_settings(args)
    try:
        check(kind, settings)
        changed = write(settings, args.out)
    except ConfigError as e:
        print(f"labconfig.py {kind}: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"labconfig.py {kind}: cannot write {args.out}: {e.strerror}", file=sys.stderr)
        return 1
    print("changed" if changed else "unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
