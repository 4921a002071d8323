"""The ``kvmss`` command line: ``az vmss``-style verbs over the controller's
REST API (HTTP only; nothing here imports the controller, except
``kvmss controller serve``, which loads it when run).

Tables for people by default; ``-o json`` prints the API's JSON for scripts.
Errors are one line on stderr, ``kvmss: <message> (<code>)``, exit status 1
(2 for usage errors); never a traceback, never the token.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

from kvmss import hostssh
from kvmss.apiclient import ApiClient, ApiError, ControllerUnreachable, path_of
from kvmss.clock import Clock, SystemClock
from kvmss.hostssh import HostStepError, Steps, check_ssh_only, join_options, ssh_options
from kvmss.labcli import lab
from kvmss.progress import WatchError, describe, running_code, upgrade_id, watch
from kvmss.tables import (
    as_object,
    history_table,
    hosts_table,
    human_bytes,
    image_versions_table,
    images_table,
    instances_table,
    one_line,
    plan_text,
    render_fields,
    scale_sets_table,
    values_of,
)

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_CONTROLLER_CONFIG = Path("/etc/kvmss/controller.yaml")
OUTPUT_FORMATS = ("table", "json")
# Secrets shorter than this are not scrubbed from output (it would mangle it).
_MIN_SCRUB = 6
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")

F = TypeVar("F", bound=Callable[..., Any])


# --- state shared by every command --------------------------------------------


@dataclass
class CliState:
    """What the global options decided; tests pass one in (``obj=``) to
    inject a :class:`~kvmss.clock.FakeClock`."""

    clock: Clock = field(default_factory=SystemClock)
    url: str = DEFAULT_URL
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    output: str = "table"
    secrets: list[str] = field(default_factory=list, repr=False)
    _client: ApiClient | None = field(default=None, repr=False)

    def client(self) -> ApiClient:
        if self._client is None:
            token = self._resolve_token()
            self.secrets.append(token)
            self._client = ApiClient(self.url, token)
        return self._client

    def _resolve_token(self) -> str:
        if self.token_file is not None:
            return read_secret_file(self.token_file, "--token-file")
        if self.token is not None:
            return check_token(self.token, "--token")
        raise click.UsageError(
            "no token: give --token-file (or KVMSS_TOKEN_FILE) or --token (or KVMSS_TOKEN)"
        )

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            if len(s) >= _MIN_SCRUB:
                text = text.replace(s, "***")
        return text

    def echo(self, text: str, *, err: bool = False) -> None:
        click.echo(self.scrub(text), err=err)

    def fail(self, message: str, status: int = 1) -> NoReturn:
        click.echo(f"kvmss: {self.scrub(one_line(message))}", err=True)
        raise click.exceptions.Exit(status)

    @property
    def json(self) -> bool:
        return self.output == "json"

    def print_json(self, doc: Any) -> None:
        self.echo(json.dumps(doc, indent=2))

    def show(self, doc: Any, render: Callable[[Any], str], empty: str | None = None) -> None:
        """``doc`` as JSON or through ``render``; ``empty`` (people only) when
        the API answered without a body."""
        if doc is None:
            if empty is not None and not self.json:
                self.echo(empty)
            return
        if self.json:
            self.print_json(doc)
        else:
            self.echo(render(doc))


def check_token(token: str, source: str) -> str:
    token = token.strip()
    if not token:
        raise click.UsageError(f"{source}: the token is empty")
    if not _TOKEN_RE.fullmatch(token):
        # Never echo it: say what is wrong, not what it is.
        raise click.UsageError(f"{source}: the token has spaces or non-printable characters")
    return token


def check_url(url: str, option: str) -> None:
    if not re.match(r"https?://[^/]", url):
        raise click.BadParameter(f"{url!r}: must start with http:// or https://", param_hint=option)


def read_secret_file(path: Path, option: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise click.UsageError(f"{option} {path}: cannot read: {reason}") from None
    return check_token(text, f"{option} {path}")


def state_of(ctx: click.Context) -> CliState:
    return ctx.find_object(CliState) or ctx.ensure_object(CliState)


class _Main(click.Group):
    """Turns API and connection errors into one line on stderr, exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as e:
            state_of(ctx).fail(f"{e.message} ({e.code})")
        except (ControllerUnreachable, WatchError, HostStepError) as e:
            state_of(ctx).fail(str(e))
        except OSError as e:  # a local file went away or became unreadable
            where = f"{e.filename}: " if e.filename else ""
            state_of(ctx).fail(f"{where}{e.strerror or e}")


def _set_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        state_of(ctx).output = value


def output_option(f: F) -> F:
    """``-o/--output`` on a command too, as in ``kvmss vmss list -o json``."""
    return click.option(
        "-o",
        "--output",
        type=click.Choice(OUTPUT_FORMATS),
        default=None,
        expose_value=False,
        callback=_set_output,
        help="Output format (overrides the global -o).",
    )(f)


# --- the group ------------------------------------------------------------------


@click.group(cls=_Main)
@click.version_option(package_name="kvmss")
@click.option(
    "--url",
    envvar="KVMSS_URL",
    default=DEFAULT_URL,
    show_default=True,
    show_envvar=True,
    help="The controller's URL.",
)
@click.option(
    "--token",
    envvar="KVMSS_TOKEN",
    show_envvar=True,
    help="Bearer token (prefer --token-file: arguments are visible to other users).",
)
@click.option(
    "--token-file",
    envvar="KVMSS_TOKEN_FILE",
    show_envvar=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="File holding the bearer token.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(OUTPUT_FORMATS),
    default="table",
    show_default=True,
    help="Tables for people, or the API's JSON for scripts.",
)
@click.pass_context
def main(
    ctx: click.Context, url: str, token: str | None, token_file: Path | None, output: str
) -> None:
    """kvmss: scale sets for libvirt/QEMU hosts."""
    check_url(url, "--url")
    if token is not None and token_file is not None:
        src_token = ctx.get_parameter_source("token")
        src_file = ctx.get_parameter_source("token_file")
        if src_token == src_file:
            raise click.UsageError("give either --token or --token-file, not both")
        # A command-line option beats an environment variable.
        if src_file == ParameterSource.COMMANDLINE:
            token = None
        else:
            token_file = None
    state = ctx.ensure_object(CliState)
    state.url = url.rstrip("/")
    state.token = token
    state.token_file = token_file
    state.output = output
    if token is not None and len(token.strip()) >= _MIN_SCRUB:
        state.secrets.append(token.strip())


pass_state = click.make_pass_decorator(CliState, ensure=True)


# --- controller -----------------------------------------------------------------


@main.group()
def controller() -> None:
    """Run the controller."""


@controller.command("serve")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_CONTROLLER_CONFIG,
    show_default=True,
    help="Controller configuration (YAML).",
)
@pass_state
def controller_serve(state: CliState, config_path: Path) -> None:
    """Serve the controller's API and run its upgrades."""
    try:
        server = importlib.import_module("controller.server")
        serve_from_config = server.serve_from_config
    except (ImportError, AttributeError) as e:
        state.fail(f"controller server not available ({e})")
    serve_from_config(config_path)


@controller.command("backup")
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_CONTROLLER_CONFIG,
    show_default=True,
    help="Controller configuration (YAML): where its database is.",
)
@pass_state
def controller_backup(state: CliState, out: Path, config_path: Path) -> None:
    """Copy the controller's database to OUT while it runs (consistent, 0600)."""
    from controller.backup import BackupError, backup
    from controller.server import ControllerConfig
    from kvmss.configfile import ConfigError

    try:
        result = backup(ControllerConfig.load(config_path).database, out)
    except (BackupError, ConfigError) as e:
        state.fail(str(e))
    click.echo(f"backed up {result.tables} tables ({result.size_bytes} bytes) to {result.path}")


# --- images ---------------------------------------------------------------------


@main.group()
def image() -> None:
    """Publish base images and list the catalog."""


_existing_file = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)


@image.command("publish")
@click.argument("publisher")
@click.argument("offer")
@click.argument("sku")
@click.argument("version")
@click.option("--file", "disk", required=True, type=_existing_file, help="The qcow2 image.")
@click.option("--kernel", type=_existing_file, help="Kernel for direct boot.")
@click.option("--initrd", type=_existing_file, help="Initrd for direct boot (needs --kernel).")
@click.option("--cmdline", help="Kernel command line (needs --kernel).")
@output_option
@pass_state
def image_publish(
    state: CliState,
    publisher: str,
    offer: str,
    sku: str,
    version: str,
    disk: Path,
    kernel: Path | None,
    initrd: Path | None,
    cmdline: str | None,
) -> None:
    """Publish VERSION of PUBLISHER:OFFER:SKU from a qcow2 file (streamed).

    Kernel and initrd are staged first; the disk upload publishes.
    """
    if kernel is None and (initrd is not None or cmdline is not None):
        which = "--initrd" if initrd is not None else "--cmdline"
        raise click.UsageError(f"{which}: needs --kernel")
    client = state.client()
    base = path_of("images", publisher, offer, sku, version)
    urn = f"{publisher}:{offer}:{sku}:{version}"
    for part, path in (("kernel", kernel), ("initrd", initrd)):
        if path is not None:
            _say_upload(state, path, f"{urn} ({part})")
            client.upload(f"{base}/{part}", path)
    _say_upload(state, disk, urn)
    manifest = client.upload(base, disk, {"cmdline": cmdline} if cmdline is not None else None)
    state.show(manifest, render_fields, empty=f"published {urn}")


def _say_upload(state: CliState, path: Path, what: str) -> None:
    if not state.json:
        state.echo(f"uploading {path} ({human_bytes(path.stat().st_size)}) as {what}", err=True)


@image.command("list")
@output_option
@pass_state
def image_list(state: CliState) -> None:
    """Publishers, offers and skus with their latest version."""
    state.show(state.client().get(path_of("images")), images_table)


@image.command("versions")
@click.argument("publisher")
@click.argument("offer")
@click.argument("sku")
@output_option
@pass_state
def image_versions(state: CliState, publisher: str, offer: str, sku: str) -> None:
    """The versions of one sku, newest first."""
    doc = state.client().get(path_of("images", publisher, offer, sku, "versions"))
    state.show(doc, image_versions_table)


@image.command("build")
@click.argument("name", type=click.Choice(["tiny", "debian"]))
@click.option("--version", "version", required=True, help="Image version, e.g. 1 or 2024.1.2.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    help="Output directory (default: build/images/NAME-VERSION in the source checkout,"
    " NAME-fw-VERSION for --boot firmware).",
)
@click.option(
    "--boot",
    type=click.Choice(["kernel", "firmware"]),
    help="debian: direct kernel boot (default) or a disk that boots through the firmware.",
)
@click.option("--publish/--no-publish", default=False, show_default=True, help="Publish it.")
@click.option("--publisher", default="kvmss", show_default=True, help="Publish as this publisher.")
@click.option("--offer", help="Publish as this offer (default: NAME).")
@click.option("--sku", default="1", show_default=True, help="Publish as this sku.")
@output_option
@pass_state
def image_build(
    state: CliState,
    name: str,
    version: str,
    out: Path | None,
    boot: str | None,
    publish: bool,
    publisher: str,
    offer: str | None,
    sku: str,
) -> None:
    """Build VERSION of image NAME from its recipe in the source checkout
    (a build of a version already built is skipped); --publish then
    publishes it as PUBLISHER:OFFER:SKU:VERSION."""
    from kvmss import imagebuild

    if boot is not None and name != "debian":
        raise click.UsageError("--boot: only the debian image can boot through the firmware")
    client = state.client() if publish else None  # no token: fail before building
    try:
        built = imagebuild.build(
            name, version, out, boot=boot, on_line=lambda line: state.echo(line, err=True)
        )
        manifest = imagebuild.read_manifest(built)
        published = None
        if client is not None:
            urn = f"{publisher}:{offer or name}:{sku}:{version}"
            _say_upload(state, built / manifest["disk"]["file"], urn)
            published = imagebuild.publish(client, built, publisher, offer or name, sku, version)
    except imagebuild.ImageBuildError as e:
        state.fail(str(e))
    if state.json:
        state.print_json({"directory": str(built), "manifest": manifest, "published": published})
        return
    state.echo(f"built {name} {version} in {built}")
    if client is not None:
        state.echo(f"published {urn}")


# --- hosts ----------------------------------------------------------------------


@main.group()
def host() -> None:
    """Register and list host agents."""


@host.command("add")
@click.argument("name")
@click.option("--url", "agent_url", help="The management URL of an agent already running.")
@click.option(
    "--agent-token-file",
    type=_existing_file,
    help="File holding that agent's bearer token.",
)
@ssh_options
@join_options
@output_option
@pass_state
def host_add(
    state: CliState,
    /,
    name: str,
    agent_url: str | None,
    agent_token_file: Path | None,
    **ssh: Any,
) -> None:
    """Register the agent of host NAME: one already running (--url and
    --agent-token-file), or one installed, started and registered over SSH
    (--ssh USER@ADDRESS)."""
    check_ssh_only(ssh)
    if ssh["ssh"] is not None:
        if agent_url is not None or agent_token_file is not None:
            raise click.UsageError("give either --ssh or --url and --agent-token-file, not both")
        doc = hostssh.add(name, ssh, _host_steps(state))
        state.show(doc, render_fields, empty=f"host {name} added")
        return
    if agent_url is None or agent_token_file is None:
        raise click.UsageError("give --url and --agent-token-file, or --ssh USER@ADDRESS")
    check_url(agent_url, "--url")
    agent_token = read_secret_file(agent_token_file, "--agent-token-file")
    state.secrets.append(agent_token)
    doc = state.client().post(
        path_of("hosts"), {"name": name, "url": agent_url, "token": agent_token}
    )
    state.show(doc, render_fields, empty=f"host {name} added")


@host.command("list")
@output_option
@pass_state
def host_list(state: CliState) -> None:
    """Registered hosts and whether the controller reaches them."""
    state.show(state.client().get(path_of("hosts")), hosts_table)


@host.command("remove")
@click.argument("name")
@ssh_options
@click.option("--purge", is_flag=True, help="With --ssh: also delete the agent's state-dir data.")
@output_option
@pass_state
def host_remove(state: CliState, /, name: str, purge: bool, **ssh: Any) -> None:
    """Remove host NAME; with --ssh, also stop its agent and remove its unit
    and configuration."""
    check_ssh_only({**ssh, "purge": purge})
    if ssh["ssh"] is not None:
        hostssh.remove(name, ssh, purge, _host_steps(state))
        return
    doc = state.client().delete(path_of("hosts", name))
    state.show(doc, render_fields)


def _host_steps(state: CliState) -> Steps:
    def say(message: str) -> None:
        state.echo(message, err=True)

    return Steps(state.client(), state.clock, say, state.secrets.append)


# --- scale sets -----------------------------------------------------------------


@main.group()
def vmss() -> None:
    """Scale sets: models, instances, upgrades."""


def _load_model(_ctx: click.Context, _param: click.Parameter, f: Any) -> dict[str, Any]:
    name = getattr(f, "name", "-")
    try:
        doc = json.load(f)
    except json.JSONDecodeError as e:
        raise click.BadParameter(
            f"{name}: not JSON ({e.msg} at line {e.lineno} column {e.colno})"
        ) from None
    except UnicodeDecodeError:
        raise click.BadParameter(f"{name}: not UTF-8 text") from None
    if not isinstance(doc, dict):
        raise click.BadParameter(f"{name}: must hold a JSON object (the scale set)")
    return doc


@vmss.command("create")
@click.argument("name")
@click.option(
    "--file",
    "model",
    required=True,
    type=click.File("r", encoding="utf-8"),
    callback=_load_model,
    help="The scale set as JSON (Azure's shape); - reads stdin.",
)
@output_option
@pass_state
def vmss_create(state: CliState, name: str, model: dict[str, Any]) -> None:
    """Create (or replace) scale set NAME from a JSON model."""
    doc = state.client().put(path_of("scaleSets", name), model)
    state.show(doc, lambda d: scale_sets_table([d]), empty=f"scale set {name} created")


def _parse_value(raw: str) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(name)

    try:
        value = json.loads(raw, parse_constant=no_constants)
    except ValueError:
        return raw
    if isinstance(value, float) and not math.isfinite(value):
        return raw
    return value


def merge_patch_from_sets(assignments: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "x=null", "y=text"]`` -> ``{"a": {"b": 1}, "x": None, "y": "text"}``.

    Values are JSON when they parse as JSON (numbers, true/false, null,
    objects, lists, "quoted strings"), else the text itself. Errors name the
    path, never the value (it may be a secret such as customData).
    """
    patch: dict[str, Any] = {}
    for item in assignments:
        path, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"{path}: expected path=value")
        keys = path.split(".")
        if any(not k for k in keys):
            raise ValueError(f"{path or '(empty)'}: the path has an empty name")
        node = patch
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ValueError(f"{path}: {'.'.join(keys[: depth + 1])} is already set to a value")
            node = child
        if keys[-1] in node:
            raise ValueError(f"{path}: set more than once")
        node[keys[-1]] = _parse_value(raw)
    return patch


def _sets_callback(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, Any]:
    try:
        return merge_patch_from_sets(values)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@vmss.command("update")
@click.argument("name")
@click.option(
    "--set",
    "patch",
    multiple=True,
    required=True,
    metavar="PATH=VALUE",
    callback=_sets_callback,
    help="A dotted path and its new value (JSON if it parses, else text; null removes). "
    "Repeatable: --set sku.capacity=6 --set properties.upgradePolicy.mode=Rolling",
)
@output_option
@pass_state
def vmss_update(state: CliState, name: str, patch: dict[str, Any]) -> None:
    """Change scale set NAME with a JSON merge patch."""
    doc = state.client().patch_merge(path_of("scaleSets", name), patch)
    state.show(doc, lambda d: scale_sets_table([d]), empty=f"scale set {name} updated")


@vmss.command("show")
@click.argument("name")
@output_option
@pass_state
def vmss_show(state: CliState, name: str) -> None:
    """Scale set NAME, one dotted path per line (the paths --set takes)."""
    state.show(state.client().get(path_of("scaleSets", name)), render_fields)


@vmss.command("list")
@output_option
@pass_state
def vmss_list(state: CliState) -> None:
    """All scale sets."""
    doc = state.client().get(path_of("scaleSets"))
    state.show(doc, lambda d: scale_sets_table(values_of(d)))


@vmss.command("delete")
@click.argument("name")
@output_option
@pass_state
def vmss_delete(state: CliState, name: str) -> None:
    """Delete scale set NAME and its instances."""
    doc = state.client().delete(path_of("scaleSets", name))
    state.show(doc, render_fields)


@vmss.command("list-instances")
@click.argument("name")
@output_option
@pass_state
def vmss_list_instances(state: CliState, name: str) -> None:
    """Instances of NAME: host, update/fault domain, image version, health."""
    doc = state.client().get(path_of("scaleSets", name, "virtualMachines"))
    state.show(doc, instances_table)


# --- rolling upgrades -------------------------------------------------------------


@vmss.group("rolling-upgrade")
def rolling_upgrade() -> None:
    """Start, follow and cancel rolling OS upgrades."""


def _watch_latest(state: CliState, name: str, expected_upgrade_id: str | None = None) -> None:
    """Follow the latest upgrade of ``name`` to its end; exit 0 only on Completed."""
    client = state.client()
    path = path_of("scaleSets", name, "rollingUpgrades", "latest")

    def fetch() -> Mapping[str, Any]:
        doc = client.get(path)
        if not isinstance(doc, Mapping):
            raise ApiError(200, "BadResponse", f"GET {path}: not a rolling upgrade status")
        return doc

    try:
        final = watch(
            fetch,
            lambda line: state.echo(line, err=state.json),
            state.clock,
            expected_upgrade_id=expected_upgrade_id,
        )
    except KeyboardInterrupt:
        state.fail(
            f"stopped watching; the rolling upgrade of {name} keeps running "
            f"(stop it with: kvmss vmss rolling-upgrade cancel {name})",
            status=130,
        )
    if state.json:
        state.print_json(final)
    code = running_code(final)
    if code != "Completed":
        err = as_object(as_object(final.get("properties")).get("error"))
        detail = f": {err.get('message', '-')} ({err.get('code', '-')})" if err else ""
        state.fail(f"rolling upgrade of {name} {code}{detail}")


@rolling_upgrade.command("start")
@click.argument("name")
@click.option("--wait", is_flag=True, help="Follow the upgrade until it ends.")
@output_option
@pass_state
def rolling_upgrade_start(state: CliState, name: str, wait: bool) -> None:
    """Start a rolling OS upgrade of NAME to the latest image."""
    doc = state.client().post(path_of("scaleSets", name, "osRollingUpgrade"))
    if wait:
        _watch_latest(state, name, upgrade_id(doc) if isinstance(doc, Mapping) else None)
        return
    if state.json:
        if doc is not None:
            state.print_json(doc)
        return
    state.echo(
        f"rolling upgrade of {name} started; follow it with: kvmss vmss rolling-upgrade wait {name}"
    )


@rolling_upgrade.command("wait")
@click.argument("name")
@output_option
@pass_state
def rolling_upgrade_wait(state: CliState, name: str) -> None:
    """Follow the latest upgrade of NAME: exit 0 when Completed, 1 when
    Faulted or Cancelled, 130 on Ctrl-C (the upgrade keeps running)."""
    _watch_latest(state, name)


@rolling_upgrade.command("get-latest")
@click.argument("name")
@output_option
@pass_state
def rolling_upgrade_get_latest(state: CliState, name: str) -> None:
    """Status of the latest rolling upgrade of NAME."""
    doc = state.client().get(path_of("scaleSets", name, "rollingUpgrades", "latest"))
    state.show(doc, lambda d: "\n".join(describe(as_object(d), state.clock.now())))


@rolling_upgrade.command("cancel")
@click.argument("name")
@output_option
@pass_state
def rolling_upgrade_cancel(state: CliState, name: str) -> None:
    """Cancel the running upgrade of NAME: nothing new starts, instances in flight finish."""
    doc = state.client().post(path_of("scaleSets", name, "rollingUpgrades", "cancel"))
    if state.json:
        if doc is not None:
            state.print_json(doc)
        return
    state.echo(f"cancel requested for {name}: nothing new starts, instances in flight finish")


@vmss.command("get-os-upgrade-history")
@click.argument("name")
@output_option
@pass_state
def vmss_history(state: CliState, name: str) -> None:
    """The last OS upgrades of NAME, newest first."""
    doc = state.client().get(path_of("scaleSets", name, "osUpgradeHistory"))
    state.show(doc, history_table)


def _instance_ids_options(f: F) -> F:
    f = click.argument("more_ids", nargs=-1, metavar="")(f)
    return click.option(
        "--instance-ids",
        "instance_ids",
        multiple=True,
        required=True,
        metavar="ID...",
        help="Instance ids, space- or comma-separated: --instance-ids 0 1 2",
    )(f)


def _collect_ids(first: Sequence[str], more: Sequence[str]) -> list[str]:
    ids: list[str] = []
    for chunk in (*first, *more):
        for iid in chunk.split(","):
            iid = iid.strip()
            if iid and iid not in ids:
                ids.append(iid)
    if not ids:
        raise click.BadParameter("give at least one instance id", param_hint="--instance-ids")
    return ids


def _instances_action(state: CliState, name: str, action: str, ids: list[str]) -> None:
    doc = state.client().post(path_of("scaleSets", name, action), {"instanceIds": ids})
    verb = {"manualUpgrade": "manual upgrade", "reimage": "reimage"}[action]
    state.show(doc, render_fields, empty=f"{verb} of {name} instances {', '.join(ids)} accepted")


@vmss.command("manual-upgrade")
@click.argument("name")
@_instance_ids_options
@output_option
@pass_state
def vmss_manual_upgrade(
    state: CliState, name: str, instance_ids: tuple[str, ...], more_ids: tuple[str, ...]
) -> None:
    """Bring the named instances of NAME to the latest model."""
    _instances_action(state, name, "manualUpgrade", _collect_ids(instance_ids, more_ids))


@vmss.command("reimage")
@click.argument("name")
@_instance_ids_options
@output_option
@pass_state
def vmss_reimage(
    state: CliState, name: str, instance_ids: tuple[str, ...], more_ids: tuple[str, ...]
) -> None:
    """Give the named instances of NAME a new OS disk (data disks stay)."""
    _instances_action(state, name, "reimage", _collect_ids(instance_ids, more_ids))


@vmss.command("plan")
@click.argument("name")
@output_option
@pass_state
def vmss_plan(state: CliState, name: str) -> None:
    """The batches a rolling upgrade of NAME would take, in order."""
    doc = state.client().get(path_of("scaleSets", name, "rollingUpgrades", "plan"))
    state.show(doc, plan_text)


# --- local lab ------------------------------------------------------------------

main.add_command(lab)


if __name__ == "__main__":
    main()
