"""The host agent: everything that touches a hypervisor host.

Layers, top to bottom (enforced by ``make lint``): :mod:`hostagent.daemon`,
:mod:`hostagent.lifecycle`, then :mod:`hostagent.hypervisor`,
:mod:`hostagent.guest` and :mod:`hostagent.health`, then
:mod:`hostagent.domxml`, :mod:`hostagent.disks` and :mod:`hostagent.network`,
and :mod:`hostagent.contract` at the bottom, the only part the controller
imports.
"""
