"""kvmss: scale sets for libvirt/QEMU hosts.

This package holds what stands around the two daemons (:mod:`controller`,
:mod:`hostagent`): :mod:`kvmss.base` beneath them, and the tools people run
above them (:mod:`kvmss.client`, :mod:`kvmss.lab`, :mod:`kvmss.hostjoin`,
:mod:`kvmss.cli`). ``docs/design.md`` draws the layers.
"""
