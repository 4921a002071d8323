"""``kvmss lab up``: a local lab on this one machine, and the demo ``make
demo`` runs in it.

It builds the tiny image versions 1 and 2, starts a controller (embedded
SQLite) and N host agents as detached background processes, each agent its
own "host" with its own bridge, subnet and storage directory, publishes
version 1, registers the hosts, creates the scale set from
``examples/demo.json``, waits until every instance is healthy, publishes
version 2 and shows the automatic rolling upgrade live, then the upgrade
history and how to look around. Every step is skipped when already done, so
``up`` can be run again on a lab that is up (or was interrupted).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvmss.base.clock import Clock, SystemClock
from kvmss.base.waiting import wait_until
from kvmss.client import imagebuild
from kvmss.client.api import ApiClient, ApiError, path_of
from kvmss.client.progress import TERMINAL_CODES, running_code
from kvmss.client.screen import Screen
from kvmss.client.tables import history_table, values_of
from kvmss.lab import agents as labagents
from kvmss.lab import daemons
from kvmss.lab import files as labfiles
from kvmss.lab import state as labstate
from kvmss.lab.files import REPO, read_token
from kvmss.lab.hints import look_around, take_down
from kvmss.lab.state import DEFAULT_SCALE_SET, LabError, LabState
from kvmss.lab.view import follow_upgrade, target_version, wait_healthy

EXAMPLE_MODEL = REPO / "examples" / "demo.json"
IMAGES = REPO / "build" / "images"
IMAGE = ("kvmss", "tiny", "1")  # publisher, offer, sku
URN = ":".join(IMAGE)
FIRST_VERSION, SECOND_VERSION = "1", "2"
HEALTHY_TIMEOUT = 900.0
UPGRADE_START_TIMEOUT = 60.0
UPGRADE_TIMEOUT = 1800.0


@dataclass(frozen=True)
class UpOptions:
    root: Path
    hosts: int = 2
    instances: int = 6
    scale_set: str = DEFAULT_SCALE_SET
    model_file: Path = EXAMPLE_MODEL
    healthy_timeout: float = HEALTHY_TIMEOUT
    upgrade_timeout: float = UPGRADE_TIMEOUT


@dataclass(frozen=True)
class UpResult:
    state: LabState
    history: Mapping[str, Any]

    @property
    def code(self) -> str:
        entries = values_of(self.history)
        props = entries[0].get("properties") if entries else None
        return running_code({"properties": props}) if isinstance(props, Mapping) else "None"


# --- images ----------------------------------------------------------------------------


def build_image(version: str) -> Path:
    """Build (or find already built) tiny image ``version`` under build/images."""
    try:
        return imagebuild.build("tiny", version, IMAGES / f"tiny-{version}")
    except imagebuild.ImageBuildError as e:
        raise LabError(str(e)) from None


def _image_path(version: str) -> str:
    return path_of("images", *IMAGE, version)


def is_published(client: ApiClient, version: str) -> bool:
    try:
        client.get(_image_path(version))
    except ApiError as e:
        if e.status == 404:
            return False
        raise
    return True


def publish(client: ApiClient, image_dir: Path, version: str) -> None:
    """Publish a built tiny image as kvmss:tiny:1:``version``."""
    imagebuild.publish(client, image_dir, *IMAGE, version)


# --- the scale set ---------------------------------------------------------------------


def load_model(path: Path, capacity: int) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise LabError(f"{path}: cannot read: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise LabError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("sku"), dict):
        raise LabError(f"{path}: must be a scale set with a sku")
    doc["sku"]["capacity"] = capacity
    return doc


def check_no_foreign_instances(state: LabState) -> None:
    """libvirt domain names are per machine: refuse to start when another
    lab (or a test) already has instances of a scale set with this name."""
    slot = state.hosts[0]
    token = read_token(state.host(slot).token)
    prefix = f"{state.scale_set}-"
    for inst in labagents.instances(slot.url, token):
        if inst.name.startswith(prefix) and not labagents.is_under(inst.os_disk, state.root):
            raise LabError(
                f"libvirt already has domain {inst.name} with its disks outside {state.root}:"
                f" another lab uses scale set name {state.scale_set!r} (take it down, or give"
                " this one another --name)"
            )


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def latest_upgrade(client: ApiClient, name: str) -> Mapping[str, Any] | None:
    """The latest rolling upgrade of scale set ``name``; None when it has had none."""
    try:
        doc = client.get(path_of("scaleSets", name, "rollingUpgrades", "latest"))
    except ApiError as e:
        if e.status == 404:
            return None
        raise
    return doc if isinstance(doc, Mapping) else None


def wait_upgrade_started(
    client: ApiClient, name: str, version: str, clock: Clock, timeout: float
) -> None:
    def started() -> bool:
        latest = latest_upgrade(client, name)
        return latest is not None and target_version(latest) == version

    if not wait_until(clock, started, timeout=timeout, interval=1.0):
        raise LabError(
            f"no rolling upgrade of {name} to version {version} started within {timeout:.0f}s"
            " of publishing it"
        )


# --- up ----------------------------------------------------------------------------------


def prepare(opts: UpOptions, screen: Screen) -> LabState:
    """The lab's state: the one in ``opts.root`` when there is one, else a new one."""
    root = opts.root
    labfiles.check_root(root)
    state = labstate.load(root)
    if state is None:
        labfiles.make_dirs(root)
        state = labfiles.new_state(root, opts.hosts, opts.scale_set)
        labstate.save(state)
        screen.say(f"lab: new in {root}")
    else:
        if len(state.hosts) != opts.hosts:
            raise LabError(
                f"the lab in {root} has {len(state.hosts)} hosts, not {opts.hosts}:"
                f" take it down first ({take_down(root)}) to change --hosts"
            )
        if state.scale_set != opts.scale_set:
            raise LabError(
                f"the lab in {root} runs scale set {state.scale_set}, not {opts.scale_set}:"
                f" take it down first ({take_down(root)}) to change --name"
            )
        screen.say(f"lab: {root} (already there; finishing what is not done)")
    labfiles.write_files(state)
    return state


@dataclass(frozen=True)
class _Up:
    """The steps of ``up`` once the daemons answer, on one lab's controller."""

    opts: UpOptions
    state: LabState
    client: ApiClient
    screen: Screen
    clock: Clock

    def path(self, *parts: str) -> str:
        return path_of("scaleSets", self.state.scale_set, *parts)

    def register_hosts(self) -> None:
        registered = {str(h.get("name")) for h in values_of(self.client.get(path_of("hosts")))}
        for slot in self.state.hosts:
            if slot.name not in registered:
                token = read_token(self.state.host(slot).token)
                body = {"name": slot.name, "url": slot.url, "token": token}
                self.client.post(path_of("hosts"), body)
                self.screen.say(f"registered host {slot.name} ({slot.url})")

    def create_scale_set(self) -> None:
        opts = self.opts
        self.client.put(self.path(), load_model(opts.model_file, opts.instances))
        self.screen.say(
            f"scale set {self.state.scale_set}: {plural(opts.instances, 'instance')} from"
            f" {opts.model_file.name}, image {URN}:latest, automatic OS upgrades"
        )
        self.screen.say(
            f"dashboard: {self.state.url}/ui/ (sign in with the token in"
            f" {self.state.controller.token})"
        )

    def upgrade(self, image: Path, latest: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """Once every instance is healthy, publish the second version (unless
        it is) and wait for its upgrade to start; the latest upgrade then."""
        wait_healthy(
            lambda: self.client.get(self.path("virtualMachines")),
            self.opts.instances,
            self.screen,
            self.clock,
            timeout=self.opts.healthy_timeout,
        )
        self.screen.say(f"all {self.opts.instances} instances healthy")
        if is_published(self.client, SECOND_VERSION):
            return latest
        publish(self.client, image, SECOND_VERSION)
        self.screen.say(
            f"published {URN}:{SECOND_VERSION}: the controller starts the upgrade itself"
        )
        name = self.state.scale_set
        wait_upgrade_started(self.client, name, SECOND_VERSION, self.clock, UPGRADE_START_TIMEOUT)
        return latest_upgrade(self.client, name)

    def follow(self, latest: Mapping[str, Any] | None) -> None:
        """Show the running upgrade live until it ends."""
        if latest is None:
            return
        if running_code(latest) in TERMINAL_CODES:
            self.screen.say(
                f"version {SECOND_VERSION} was already published; its upgrade has ended"
            )
            return
        self.screen.say("")
        follow_upgrade(
            lambda: self.client.get(self.path("rollingUpgrades", "latest")),
            lambda: self.client.get(self.path("virtualMachines")),
            self.screen,
            self.clock,
            timeout=self.opts.upgrade_timeout,
            max_rows=lambda: max(10, shutil.get_terminal_size((100, 40)).lines - 2),
        )


def up(opts: UpOptions, screen: Screen, clock: Clock | None = None) -> UpResult:
    """Everything ``kvmss lab up`` does (see the module's docstring)."""
    clock = clock or SystemClock()
    state = prepare(opts, screen)
    images = {}
    for version in (FIRST_VERSION, SECOND_VERSION):
        images[version] = build_image(version)
        screen.say(f"image tiny {version}: ready in {images[version]}")
    daemons.start(state, screen, clock)
    check_no_foreign_instances(state)
    client = ApiClient(state.url, read_token(state.controller.token))
    steps = _Up(opts, state, client, screen, clock)
    if not is_published(client, FIRST_VERSION):
        publish(client, images[FIRST_VERSION], FIRST_VERSION)
        screen.say(f"published {URN}:{FIRST_VERSION}")
    steps.register_hosts()
    steps.create_scale_set()
    latest = latest_upgrade(client, state.scale_set)
    if latest is None or running_code(latest) in TERMINAL_CODES:
        # (an upgrade still running, after an interrupted up, is shown right away)
        latest = steps.upgrade(images[SECOND_VERSION], latest)
    steps.follow(latest)
    history = client.get(steps.path("osUpgradeHistory"))
    name = state.scale_set
    screen.say("")
    screen.say(f"OS upgrade history of {name} (kvmss vmss get-os-upgrade-history {name}):")
    screen.say(history_table(history))
    screen.say("")
    screen.say(look_around(state))
    return UpResult(state, history if isinstance(history, Mapping) else {})
