"""kvmss: scale sets for libvirt/QEMU hosts.

What stands around the two daemons: the base beneath them and the tools
people run above them (docs/design.md, "Packages and layers").
"""
