"""The images repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.store.facade import (
    AlreadyExists,
    NotFound,
    Store,
)
from tests.controller.store.builders import an_image


def test_image_crud(store: Store) -> None:
    full = an_image(
        "2.0.0",
        kernel_path=Path("/blobs/k"),
        kernel_sha256="cd" * 32,
        initrd_path=Path("/blobs/i"),
        initrd_sha256="ef" * 32,
        cmdline="console=ttyS0",
    )
    store.images.add(an_image("1.0.0"))
    store.images.add(full)
    store.images.add(an_image("1.0.0", sku="other"))
    assert store.images.get("kvmss", "tiny", "busybox", "2.0.0") == full
    assert store.images.get("kvmss", "tiny", "busybox", "3.0.0") is None
    with pytest.raises(AlreadyExists, match=r"image kvmss/tiny/busybox/1\.0\.0: already exists"):
        store.images.add(an_image("1.0.0", sha256="00" * 32))
    assert len(store.images.matching()) == 3
    assert {r.version for r in store.images.matching("kvmss", "tiny", "busybox")} == {
        "1.0.0",
        "2.0.0",
    }
    assert [r.sku for r in store.images.matching(sku="other")] == ["other"]
    assert store.images.matching(publisher="nobody") == []
    store.images.delete("kvmss", "tiny", "busybox", "1.0.0")
    assert store.images.get("kvmss", "tiny", "busybox", "1.0.0") is None
    with pytest.raises(NotFound, match=r"image kvmss/tiny/busybox/1\.0\.0: not found"):
        store.images.delete("kvmss", "tiny", "busybox", "1.0.0")
