"""Where instances go: spread over hosts (the fault domain is the host), update
domains round-robin by instance id, new ids never reuse old ones, scale-in
removes the highest ids first."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

# Update domains are assigned round-robin by instance id (docs/design.md).
DEFAULT_UPDATE_DOMAIN_COUNT = 5


class PlacementError(ValueError):
    pass


def update_domain(instance_id: str) -> int:
    """Round-robin by the id's value, not its position: an instance keeps its
    update domain when others are added or removed."""
    return int(instance_id) % DEFAULT_UPDATE_DOMAIN_COUNT


def new_instance_ids(existing: Sequence[str], capacity: int, next_id: int) -> list[str]:
    """Ids to create to reach ``capacity``: ``next_id``, ``next_id + 1``, ..."""
    missing = capacity - len(existing)
    return [str(next_id + k) for k in range(max(0, missing))]


def ids_to_remove(existing: Sequence[str], capacity: int) -> list[str]:
    """Ids to delete to come down to ``capacity``: the highest first."""
    extra = len(existing) - capacity
    return sorted(existing, key=int, reverse=True)[: max(0, extra)]


def place(
    new_ids: Sequence[str], hosts: Sequence[str], current: dict[str, str]
) -> dict[str, tuple[str, int, int]]:
    """instance id -> (host, update domain, fault domain) for each new id.

    ``current`` maps existing instance ids to their hosts. Each new instance
    goes to the host with the fewest instances of the set (ties: host name).
    """
    if new_ids and not hosts:
        raise PlacementError("no hosts are registered: add one with POST /v1/hosts")
    order = sorted(hosts)
    load = Counter({h: 0 for h in order})
    load.update(h for h in current.values() if h in load)
    out = {}
    for iid in new_ids:
        host = min(order, key=lambda h: (load[h], h))
        load[host] += 1
        out[iid] = (host, update_domain(iid), order.index(host))
    return out
