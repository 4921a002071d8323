"""What the controller hands agents of an image: its published record resolved
from a reference, as a spec with signed download URLs."""

from __future__ import annotations

import hashlib
import hmac

from controller.base.settings import Settings
from controller.images.catalog import LATEST, Catalog
from controller.model.scaleset import ScaleSetModel
from controller.store.facade import ImageRecord
from hostagent.contract import instancespec


class ImageSpecs:
    """Images resolved from references, and the specs agents download them by."""

    def __init__(self, catalog: Catalog, settings: Settings) -> None:
        self._catalog = catalog
        self._settings = settings

    def blob_signature(self, sha256: str) -> str:
        return hmac.new(self._settings.blob_secret, sha256.encode(), hashlib.sha256).hexdigest()

    def image_spec(self, rec: ImageRecord) -> instancespec.ImageSpec:
        base = (
            f"{self._settings.public_url.rstrip('/')}/v1/images/"
            f"{rec.publisher}/{rec.offer}/{rec.sku}/{rec.version}"
        )

        def art(part: str, sha: str | None) -> instancespec.Artifact | None:
            if sha is None:
                return None
            return instancespec.Artifact(
                url=f"{base}/{part}?sig={self.blob_signature(sha)}", sha256=sha
            )

        return instancespec.ImageSpec(
            reference=instancespec.ImageReference(
                publisher=rec.publisher, offer=rec.offer, sku=rec.sku, version=rec.version
            ),
            url=f"{base}/blob?sig={self.blob_signature(rec.sha256)}",
            sha256=rec.sha256,
            kernel=art("kernel", rec.kernel_sha256),
            initrd=art("initrd", rec.initrd_sha256),
            cmdline=rec.cmdline,
        )

    def resolve(self, ref: instancespec.ImageReference, version: str | None = None) -> ImageRecord:
        """The published record of ``ref`` (of its sku's ``version`` when
        given); a :class:`~controller.images.catalog.CatalogError` if none."""
        v = ref.version if version is None else version
        return self._catalog.resolve(ref.publisher, ref.offer, ref.sku, v)

    def latest_image(self, model: ScaleSetModel) -> ImageRecord:
        return self.resolve(model.image_reference, LATEST)
