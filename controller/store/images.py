"""The store's image catalog rows (the blobs live in :mod:`controller.images.catalog`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from controller.store import queries
from controller.store.engine import Database
from controller.store.records import AlreadyExists, ImageRecord, ImageRef, NotFound
from controller.store.rows import _record, _row
from controller.store.schema import images_table


def _opt_path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def _opt_str(value: Path | None) -> str | None:
    return None if value is None else os.fspath(value)


def _image_from_row(m: Mapping[Any, Any]) -> ImageRecord:
    return _record(
        ImageRecord,
        m,
        path=Path(m["path"]),
        kernel_path=_opt_path(m["kernel_path"]),
        initrd_path=_opt_path(m["initrd_path"]),
    )


def _image_to_row(rec: ImageRecord) -> dict[str, Any]:
    return _row(
        rec,
        path=os.fspath(rec.path),
        kernel_path=_opt_str(rec.kernel_path),
        initrd_path=_opt_str(rec.initrd_path),
    )


class Images:
    """The ``images`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, rec: ImageRecord) -> None:
        try:
            with self._db.write() as conn:
                conn.execute(insert(images_table).values(**_image_to_row(rec)))
        except IntegrityError:
            raise AlreadyExists(f"image {rec.ref}: already exists") from None

    def get(self, publisher: str, offer: str, sku: str, version: str) -> ImageRecord | None:
        rows = self._db.maps(queries.IMAGE, p=publisher, o=offer, s=sku, v=version)
        return _image_from_row(rows[0]) if rows else None

    def matching(
        self, publisher: str | None = None, offer: str | None = None, sku: str | None = None
    ) -> list[ImageRecord]:
        """Images matching the parts given, ordered by publisher, offer, sku
        (versions in no particular order: see :mod:`controller.model.versions`)."""
        if None not in (publisher, offer, sku):  # a sku's versions: what `latest` reads
            rows = self._db.maps(queries.IMAGES_OF_SKU, p=publisher, o=offer, s=sku)
            return [_image_from_row(m) for m in rows]
        t = images_table.c
        q = select(images_table).order_by(t.publisher, t.offer, t.sku, t.version)
        if publisher is not None:
            q = q.where(t.publisher == publisher)
        if offer is not None:
            q = q.where(t.offer == offer)
        if sku is not None:
            q = q.where(t.sku == sku)
        with self._db.read() as conn:
            return [_image_from_row(m) for m in conn.execute(q).mappings()]

    def delete(self, publisher: str, offer: str, sku: str, version: str) -> None:
        with self._db.write() as conn:
            t = images_table.c
            res = conn.execute(
                delete(images_table).where(
                    t.publisher == publisher, t.offer == offer, t.sku == sku, t.version == version
                )
            )
        if res.rowcount == 0:
            ref = ImageRef(publisher, offer, sku, version)
            raise NotFound(f"image {ref}: not found")
