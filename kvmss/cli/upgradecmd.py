"""The upgrade commands of ``kvmss vmss``: ``rolling-upgrade`` (start, wait,
get-latest, cancel), ``get-os-upgrade-history``, ``manual-upgrade``,
``reimage`` and ``plan``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import click

from kvmss.cli.state import CliState, F, output_option, pass_state
from kvmss.client.api import ApiError, path_of
from kvmss.client.progress import describe, running_code, upgrade_id, watch
from kvmss.client.tables import as_object, history_table, plan_text, render_fields


@click.group("rolling-upgrade")
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


@click.command("get-os-upgrade-history")
@click.argument("name")
@output_option
@pass_state
def vmss_history(state: CliState, name: str) -> None:
    """The last OS upgrades of NAME, newest first."""
    doc = state.client().get(path_of("scaleSets", name, "osUpgradeHistory"))
    state.show(doc, history_table)


def _instance_ids_options(f: F, required: bool = True) -> F:
    f = click.argument("more_ids", nargs=-1, metavar="")(f)
    return click.option(
        "--instance-ids",
        "instance_ids",
        multiple=True,
        required=required,
        metavar="ID...",
        help="Instance ids, space- or comma-separated: --instance-ids 0 1 2",
    )(f)


def _collect_ids(first: Sequence[str], more: Sequence[str], required: bool = True) -> list[str]:
    ids: list[str] = []
    for chunk in (*first, *more):
        for iid in chunk.split(","):
            iid = iid.strip()
            if iid and iid not in ids:
                ids.append(iid)
    if not ids and required:
        raise click.BadParameter("give at least one instance id", param_hint="--instance-ids")
    return ids


def _update_domains(given: Sequence[str]) -> list[int]:
    uds: list[int] = []
    for chunk in given:
        for ud in chunk.split(","):
            ud = ud.strip()
            if not ud:
                continue
            if not ud.isdigit() or int(ud) > 19:
                raise click.BadParameter(
                    f"{ud[:20]!r} is not an update domain (0 to 19)", param_hint="--update-domains"
                )
            if int(ud) not in uds:
                uds.append(int(ud))
    return uds


def _instances_action(state: CliState, name: str, action: str, ids: list[str]) -> None:
    doc = state.client().post(path_of("scaleSets", name, action), {"instanceIds": ids})
    verb = {"manualUpgrade": "manual upgrade", "reimage": "reimage"}[action]
    state.show(doc, render_fields, empty=f"{verb} of {name} instances {', '.join(ids)} accepted")


@click.command("manual-upgrade")
@click.argument("name")
@click.option(
    "--update-domains",
    "update_domains",
    multiple=True,
    metavar="UD,...",
    help="Every instance of these update domains, comma-separated: --update-domains 0,2",
)
@functools.partial(_instance_ids_options, required=False)
@output_option
@pass_state
def vmss_manual_upgrade(
    state: CliState,
    name: str,
    instance_ids: tuple[str, ...],
    more_ids: tuple[str, ...],
    update_domains: tuple[str, ...],
) -> None:
    """Bring the named instances, or every instance of the named update
    domains, of NAME to the latest model."""
    ids = _collect_ids(instance_ids, more_ids, required=False)
    uds = _update_domains(update_domains)
    if not ids and not uds:
        raise click.UsageError("give --instance-ids, --update-domains or both")
    body: dict[str, Any] = {"instanceIds": ids}
    if uds:
        body["updateDomains"] = uds
    doc = state.client().post(path_of("scaleSets", name, "manualUpgrade"), body)
    chosen = [f"instances {', '.join(ids)}"] if ids else []
    chosen += [f"update domains {', '.join(map(str, uds))}"] if uds else []
    state.show(
        doc, render_fields, empty=f"manual upgrade of {name} {' and '.join(chosen)} accepted"
    )


@click.command("reimage")
@click.argument("name")
@_instance_ids_options
@output_option
@pass_state
def vmss_reimage(
    state: CliState, name: str, instance_ids: tuple[str, ...], more_ids: tuple[str, ...]
) -> None:
    """Give the named instances of NAME a new OS disk (data disks stay)."""
    _instances_action(state, name, "reimage", _collect_ids(instance_ids, more_ids))


@click.command("plan")
@click.argument("name")
@output_option
@pass_state
def vmss_plan(state: CliState, name: str) -> None:
    """The batches a rolling upgrade of NAME would take, in order."""
    doc = state.client().get(path_of("scaleSets", name, "rollingUpgrades", "plan"))
    state.show(doc, plan_text)
