"""``kvmss image``: publish base images, list the catalog, build an image
from its recipe.
"""

from __future__ import annotations

from pathlib import Path

import click

from kvmss.cli.state import CliState, existing_file, output_option, pass_state
from kvmss.client import imagebuild
from kvmss.client.api import path_of
from kvmss.client.tables import human_bytes, image_versions_table, images_table, render_fields


@click.group()
def image() -> None:
    """Publish base images and list the catalog."""


@image.command("publish")
@click.argument("publisher")
@click.argument("offer")
@click.argument("sku")
@click.argument("version")
@click.option("--file", "disk", required=True, type=existing_file, help="The qcow2 image.")
@click.option("--kernel", type=existing_file, help="Kernel for direct boot.")
@click.option("--initrd", type=existing_file, help="Initrd for direct boot (needs --kernel).")
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
