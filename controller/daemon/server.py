"""``kvmss controller serve --config FILE``: the controller daemon.

Configuration (YAML), e.g. /etc/kvmss/controller.yaml::

    listen: 127.0.0.1:8080
    token_file: /etc/kvmss/controller.token   # or token: "..."
    database: /var/lib/kvmss/controller/kvmss.db
    blob_dir: /var/lib/kvmss/controller/images
    public_url: http://10.0.0.1:8080          # how agents reach this controller
    poll_seconds: 1
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from controller.api.app import create_app
from controller.base.settings import POLL_SECONDS
from controller.fleet.agents import AgentPool
from controller.images.catalog import Catalog
from controller.service.controller import Controller, Settings
from controller.store.facade import Store
from controller.ui import routes as ui
from kvmss.base import atomicfile, configfile, serving
from kvmss.base.clock import Clock, SystemClock
from kvmss.base.configfile import ConfigError
from kvmss.base.sdnotify import Notifier

log = logging.getLogger(__name__)

KNOWN = {"listen", "token", "token_file", "database", "blob_dir", "public_url", "poll_seconds"}


@dataclass(frozen=True)
class ControllerConfig:
    host: str
    port: int
    token: str
    database: Path
    blob_dir: Path
    public_url: str
    poll_seconds: float = POLL_SECONDS

    @classmethod
    def load(cls, path: Path) -> ControllerConfig:
        return cls.from_dict(configfile.load_mapping(path, KNOWN), path.parent)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base: Path = Path(".")) -> ControllerConfig:
        configfile.check_known(raw, KNOWN)
        host, port = configfile.listen_address(raw.get("listen"), "127.0.0.1:8080")
        token = configfile.token(raw, base)
        state = Path("/var/lib/kvmss/controller")
        db = base / str(raw.get("database", state / "kvmss.db"))
        blobs = base / str(raw.get("blob_dir", state / "images"))
        public = str(raw.get("public_url", f"http://{host}:{port}"))
        poll = raw.get("poll_seconds", POLL_SECONDS)
        if not isinstance(poll, int | float) or poll <= 0:
            raise ConfigError("poll_seconds: must be a positive number")
        return cls(host, port, token, db, blobs, public, float(poll))


def build(cfg: ControllerConfig, clock: Clock | None = None) -> tuple[Controller, Any]:
    """The controller and its ASGI app, resumed (running upgrades continue)."""
    clock = clock or SystemClock()
    cfg.database.parent.mkdir(parents=True, exist_ok=True)
    cfg.blob_dir.mkdir(parents=True, exist_ok=True)
    secret_file = cfg.blob_dir / ".blob-secret"
    if not secret_file.exists():
        atomicfile.write_bytes(secret_file, secrets.token_bytes(32))
    store = Store.open(f"sqlite:///{cfg.database}", clock=clock)
    catalog = Catalog(store, cfg.blob_dir, clock)
    ctl_holder: list[Controller] = []

    class Hosts:
        def host_endpoint(self, host: str) -> tuple[str, str]:
            return ctl_holder[0].host_endpoint(host)

    ctl = Controller(
        store,
        catalog,
        AgentPool(Hosts()),
        clock,
        Settings(cfg.public_url, secret_file.read_bytes(), cfg.poll_seconds),
    )
    ctl_holder.append(ctl)
    staging = cfg.blob_dir / ".staging"
    staging.mkdir(exist_ok=True)
    app = create_app(ctl, cfg.token, staging)
    ui.install(app, ctl, cfg.token, clock)
    ctl.resume()
    return ctl, app


def serve_from_config(path: Path) -> None:
    """Serve until SIGTERM/SIGINT; under systemd (``Type=notify``) READY=1 once
    listening, the watchdog fed from the serving loop, STOPPING=1 on shutdown."""
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = ControllerConfig.load(path)
    except ConfigError as e:  # one line in the journal, not a traceback
        print(f"kvmss controller: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        ctl, app = build(cfg)
    except Exception as e:
        print(f"kvmss controller: cannot start: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    server = serving.Server(
        uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)
    )
    log.info("controller serving on %s:%d", cfg.host, cfg.port)
    try:
        asyncio.run(
            serving.serve(
                [server],
                Notifier.from_environ(),
                f"serving on {cfg.host}:{cfg.port}",
                handle_signals=True,
            )
        )
    finally:
        ctl.close()
        ctl.store.close()


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] != "--config":
        print("usage: python -m controller.daemon.server --config FILE", file=sys.stderr)
        raise SystemExit(2)
    serve_from_config(Path(sys.argv[2]))


if __name__ == "__main__":
    main()
