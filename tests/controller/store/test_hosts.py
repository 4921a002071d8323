"""The hosts repository (a token never shows)."""

from __future__ import annotations

import dataclasses

import pytest

from controller.store.facade import (
    AlreadyExists,
    HostRecord,
    NotFound,
    Store,
)


def test_host_crud_and_token_never_in_repr(store: Store) -> None:
    h = HostRecord(name="host1", url="http://10.0.0.1:8700", token="s3cret-token", registered_at=5)
    store.hosts.add(h)
    store.hosts.add(dataclasses.replace(h, name="host0"))
    assert store.hosts.get("host1") == h
    assert [x.name for x in store.hosts.all()] == ["host0", "host1"]
    with pytest.raises(AlreadyExists, match="host 'host1'"):
        store.hosts.add(h)
    assert "s3cret-token" not in repr(store.hosts.all())
    store.hosts.delete("host1")
    assert store.hosts.get("host1") is None
    with pytest.raises(NotFound, match="host 'host1': not found"):
        store.hosts.delete("host1")
