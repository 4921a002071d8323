"""``kvmss vmss``: scale set models and instances."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import click

from kvmss.cli.state import CliState, output_option, pass_state
from kvmss.cli.upgradecmd import (
    rolling_upgrade,
    vmss_history,
    vmss_manual_upgrade,
    vmss_plan,
    vmss_reimage,
)
from kvmss.client.api import path_of
from kvmss.client.tables import instances_table, render_fields, scale_sets_table, values_of


@click.group()
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


vmss.add_command(rolling_upgrade)
vmss.add_command(vmss_history)
vmss.add_command(vmss_manual_upgrade)
vmss.add_command(vmss_reimage)
vmss.add_command(vmss_plan)
