"""The controller: desired state, placement and rolling upgrades.

Layers, top to bottom (enforced by ``make lint``): :mod:`controller.api`,
:mod:`controller.service`, then :mod:`controller.upgrade`,
:mod:`controller.views` and :mod:`controller.fleet`, then
:mod:`controller.images`, :mod:`controller.model` and :mod:`controller.store`.
Agents are reached only through :mod:`hostagent.contract`.
"""
