"""The bounds of what an agent is asked to build, written once: the
controller refuses a model past them, the agent a spec, and the agent's
domain metadata a record it reads back.
"""

from __future__ import annotations

from typing import Any

# A VM's size.
VCPUS_MIN, VCPUS_MAX = 1, 64
MEMORY_MB_MIN, MEMORY_MB_MAX = 64, 1048576

# Data disks: a lun names its virtio target (vdb + lun), so there are as
# many data disks as luns.
LUN_MIN, LUN_MAX = 0, 15
MAX_DATA_DISKS = LUN_MAX - LUN_MIN + 1
DISK_SIZE_GB_MIN, DISK_SIZE_GB_MAX = 1, 4096

# The health probe the agent runs from the host.
PROBE_INTERVAL_SECONDS_MIN, PROBE_INTERVAL_SECONDS_MAX = 1, 3600
NUMBER_OF_PROBES_MIN, NUMBER_OF_PROBES_MAX = 1, 100
PROBE_TIMEOUT_MAX_SECONDS = 5.0  # no probe waits longer, whatever its interval
REQUEST_PATH_MAX_LENGTH = 1024

# The OS profile.
SSH_PUBLIC_KEYS_MAX = 32
SSH_PUBLIC_KEY_MAX_LENGTH = 16384
CUSTOM_DATA_MAX_LENGTH = 65536

# Extension settings are free-form JSON; this bounds how deeply they (and
# the controller's request bodies) may nest, well inside what pydantic
# serialises (255 levels) and what Python's recursion limit allows.
MAX_JSON_DEPTH = 64


def json_depth(value: Any) -> int:
    """How deeply ``value`` nests JSON objects and arrays (a scalar is 0).
    Iterative, so no value is too deep to measure."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in item)
    return deepest
