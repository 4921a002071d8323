"""The ``kvmss`` command line (controller verbs arrive with the controller)."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="kvmss")
def main() -> None:
    """kvmss: scale sets for libvirt/QEMU hosts."""
