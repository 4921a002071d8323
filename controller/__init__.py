"""The controller: desired state, placement and rolling upgrades.

Layers, top to bottom (docs/design.md, "Packages and layers"; enforced by
``make lint``): daemon, api, service, upgrade | views, fleet, images,
model | store, and base (the error, settings and background threads every
layer shares). Agents are reached only through :mod:`hostagent.contract`.
"""
