"""What agents are handed of an image: signed download URLs for each blob."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import cast

from controller.base.settings import Settings
from controller.images.catalog import Catalog
from controller.images.specs import ImageSpecs
from controller.store.facade import ImageRecord, Store

SECRET = b"k" * 32
REC = ImageRecord(
    "kvmss", "tiny", "1", "2", "a" * 64, 1, 1, Path("/b/a.qcow2"), 0.0, kernel_sha256="b" * 64
)


def _specs(catalog: Catalog | None = None) -> ImageSpecs:
    return ImageSpecs(cast(Catalog, catalog), Settings("http://ctl:8080/", SECRET))


def test_each_blob_url_is_signed_with_the_secret_over_its_sha256() -> None:
    spec = _specs().image_spec(REC)
    sig = hmac.new(SECRET, REC.sha256.encode(), hashlib.sha256).hexdigest()
    assert spec.url == f"http://ctl:8080/v1/images/kvmss/tiny/1/2/blob?sig={sig}"
    assert spec.kernel is not None and spec.kernel.sha256 == "b" * 64
    assert spec.kernel.url.endswith(f"/kernel?sig={_specs().blob_signature('b' * 64)}")
    assert spec.initrd is None and spec.reference.version == "2"


def test_resolve_takes_the_version_given_over_the_references(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        for v in ("1", "10", "9"):
            store.images.add(ImageRecord("p", "o", "s", v, "a" * 64, 1, 1, Path("/x"), 0.0))
        specs = _specs(Catalog(store, tmp_path / "blobs", store.clock))
        ref = (
            _specs()
            .image_spec(REC)
            .reference.model_copy(
                update={"publisher": "p", "offer": "o", "sku": "s", "version": "1"}
            )
        )
        assert specs.resolve(ref).version == "1"
        assert specs.resolve(ref, "latest").version == "10"
        assert specs.resolve(ref, "9").version == "9"
    finally:
        store.close()
