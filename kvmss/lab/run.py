"""``kvmss lab up|down|status``: a local lab on this one machine, and the demo
``make demo`` runs in it.

``up`` builds the tiny image versions 1 and 2, starts a controller (embedded
SQLite) and N host agents as detached background processes, each agent its
own "host" with its own bridge, subnet and storage directory, publishes
version 1, registers the hosts, creates the scale set from
``examples/demo.json``, waits until every instance is healthy, publishes
version 2 and shows the automatic rolling upgrade live, then the upgrade
history and how to look around. Every step is skipped when already done, so
``up`` can be run again on a lab that is up (or was interrupted).

``down`` stops the processes (pid files), deletes the instances through their
agents and then any domain left whose disks live under the lab's directory,
deletes the bridges and removes the directory. Built images stay in
``build/images``.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvmss.base.clock import Clock, SystemClock
from kvmss.client import imagebuild
from kvmss.client.api import ApiClient, ApiError, path_of
from kvmss.client.progress import TERMINAL_CODES, running_code
from kvmss.client.screen import Screen
from kvmss.client.tables import history_table, instances_table, values_of
from kvmss.lab import agents as labagents
from kvmss.lab import daemons, procs
from kvmss.lab import files as labfiles
from kvmss.lab import state as labstate
from kvmss.lab.down import down
from kvmss.lab.files import REPO, read_token, resolve_dir
from kvmss.lab.state import LabError, LabState, ProcessPaths
from kvmss.lab.view import follow_upgrade, sorted_vms, target_version, wait_healthy

__all__ = ["DEFAULT_SCALE_SET", "UpOptions", "UpResult", "down", "resolve_dir", "status", "up"]

EXAMPLE_MODEL = REPO / "examples" / "demo.json"
IMAGES = REPO / "build" / "images"
IMAGE = ("kvmss", "tiny", "1")  # publisher, offer, sku
FIRST_VERSION, SECOND_VERSION = "1", "2"
DEFAULT_SCALE_SET = "demo"
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


def _latest(client: ApiClient, name: str) -> Mapping[str, Any] | None:
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
    deadline = clock.monotonic() + timeout
    while True:
        latest = _latest(client, name)
        if latest is not None and target_version(latest) == version:
            return
        if clock.monotonic() >= deadline:
            raise LabError(
                f"no rolling upgrade of {name} to version {version} started within {timeout:.0f}s"
                " of publishing it"
            )
        clock.sleep(1.0)


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
    name = state.scale_set
    urn = ":".join(IMAGE)

    if not is_published(client, FIRST_VERSION):
        publish(client, images[FIRST_VERSION], FIRST_VERSION)
        screen.say(f"published {urn}:{FIRST_VERSION}")
    registered = {str(h.get("name")) for h in values_of(client.get(path_of("hosts")))}
    for slot in state.hosts:
        if slot.name not in registered:
            token = read_token(state.host(slot).token)
            client.post(path_of("hosts"), {"name": slot.name, "url": slot.url, "token": token})
            screen.say(f"registered host {slot.name} ({slot.url})")
    client.put(path_of("scaleSets", name), load_model(opts.model_file, opts.instances))
    screen.say(
        f"scale set {name}: {plural(opts.instances, 'instance')} from {opts.model_file.name},"
        f" image {urn}:latest, automatic OS upgrades"
    )
    vms_path = path_of("scaleSets", name, "virtualMachines")
    latest = _latest(client, name)
    if latest is None or running_code(latest) in TERMINAL_CODES:
        # (an upgrade still running, after an interrupted up, is shown right away)
        wait_healthy(
            lambda: client.get(vms_path),
            opts.instances,
            screen,
            clock,
            timeout=opts.healthy_timeout,
        )
        screen.say(f"all {opts.instances} instances healthy")
        if not is_published(client, SECOND_VERSION):
            publish(client, images[SECOND_VERSION], SECOND_VERSION)
            screen.say(
                f"published {urn}:{SECOND_VERSION}: the controller starts the upgrade itself"
            )
            wait_upgrade_started(client, name, SECOND_VERSION, clock, UPGRADE_START_TIMEOUT)
            latest = _latest(client, name)
    if latest is not None and running_code(latest) not in TERMINAL_CODES:
        screen.say("")
        latest_path = path_of("scaleSets", name, "rollingUpgrades", "latest")
        follow_upgrade(
            lambda: client.get(latest_path),
            lambda: client.get(vms_path),
            screen,
            clock,
            timeout=opts.upgrade_timeout,
            max_rows=lambda: max(10, shutil.get_terminal_size((100, 40)).lines - 2),
        )
    elif latest is not None:
        screen.say(f"version {SECOND_VERSION} was already published; its upgrade has ended")
    history = client.get(path_of("scaleSets", name, "osUpgradeHistory"))
    screen.say("")
    screen.say(f"OS upgrade history of {name} (kvmss vmss get-os-upgrade-history {name}):")
    screen.say(history_table(history))
    screen.say("")
    screen.say(look_around(state))
    return UpResult(state, history if isinstance(history, Mapping) else {})


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
            f"API: {state.url} (OpenAPI document: {state.url}/openapi.json)",
            f"token file: {state.controller.token}",
            f"logs: {logs}",
            f"Take it down with: {take_down(state.root)}",
        ]
    )


# --- status ----------------------------------------------------------------------------


def _process_line(label: str, url: str, paths: ProcessPaths, answers: Callable[[], bool]) -> str:
    pid = procs.running_pid(paths.pid, str(paths.config))
    if pid is None:
        return f"{label:<11} {url}  not running (log: {paths.log})"
    return f"{label:<11} {url}  pid {pid}, {'answering' if answers() else 'NOT answering'}"


def status(root: Path, screen: Screen) -> bool:
    """Print what runs in the lab at ``root``; False when there is no lab."""
    state = labstate.load(root)
    if state is None:
        screen.say(f"no lab in {root} (start one with: kvmss lab up)")
        return False
    screen.say(f"lab in {root}, scale set {state.scale_set}")
    screen.say(
        _process_line(
            "controller", state.url, state.controller, lambda: daemons.controller_answers(state)
        )
    )
    for slot in state.hosts:
        paths = state.host(slot)
        token = read_token(paths.token) if paths.token.exists() else ""
        line = _process_line(
            slot.name, slot.url, paths, functools.partial(labagents.answers, slot.url, token)
        )
        screen.say(f"{line}; bridge {slot.bridge} {slot.subnet}")
    if not daemons.controller_answers(state):
        return True
    client = ApiClient(state.url, read_token(state.controller.token))
    try:
        vms = client.get(path_of("scaleSets", state.scale_set, "virtualMachines"))
    except ApiError as e:
        screen.say(f"scale set {state.scale_set}: {e.message}")
        return True
    screen.say("")
    screen.say(instances_table({"value": sorted_vms(vms)}))
    latest = _latest(client, state.scale_set)
    if latest is not None:
        screen.say("")
        screen.say(
            f"latest rolling upgrade: {running_code(latest)} to version"
            f" {target_version(latest) or '-'}"
        )
    return True
