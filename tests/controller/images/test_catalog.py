"""controller.images.catalog with real qcow2 files made through kvmss.base.qemuimg."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.images.catalog import Catalog, CatalogError
from controller.store.facade import ImageRecord, Store
from kvmss.base import qemuimg
from kvmss.base.clock import FakeClock, iso8601

MiB = 1 << 20
PUB, OFFER, SKU = "kvmss", "tiny", "busybox"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_718_000_000.25)


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path / 'kvmss.db'}", clock=clock)
    yield s
    s.close()


@pytest.fixture
def blobs(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture
def catalog(store: Store, blobs: Path, clock: FakeClock) -> Catalog:
    return Catalog(store, blobs, clock)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    return d


def _qcow2(where: Path, name: str, data_mib: int = 1, size_mib: int = 16) -> Path:
    """A standalone qcow2 holding ``data_mib`` of random data (so each is unique)."""
    raw = where / f"{name}.raw"
    with open(raw, "wb") as f:
        f.write(os.urandom(data_mib * MiB))
        f.truncate(size_mib * MiB)
    out = where / name
    qemuimg.convert(raw, out, src_format="raw")
    raw.unlink()
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _left(blobs: Path) -> list[str]:
    return sorted(p.name for p in blobs.iterdir())


# --- publishing ----------------------------------------------------------------


def test_publish_from_a_file(catalog: Catalog, store: Store, blobs: Path, src: Path) -> None:
    image = _qcow2(src, "a.qcow2")
    rec = catalog.publish(PUB, OFFER, SKU, "1.0.0", image)
    sha = _sha(image)
    assert rec.sha256 == sha
    assert rec.size_bytes == image.stat().st_size
    assert rec.virtual_size == 16 * MiB
    assert rec.path == blobs.absolute() / f"{sha}.qcow2"
    assert rec.path.read_bytes() == image.read_bytes()
    assert rec.path.stat().st_mode & 0o777 == 0o444
    assert rec.kernel_path is None and rec.cmdline is None
    assert _left(blobs) == [f"{sha}.qcow2"]  # no .part left
    assert store.images.get(PUB, OFFER, SKU, "1.0.0") == rec


def test_publish_from_a_stream_and_manifest(catalog: Catalog, clock: FakeClock, src: Path) -> None:
    image = _qcow2(src, "a.qcow2")
    rec = catalog.publish(PUB, OFFER, SKU, "2024.1.5", io.BytesIO(image.read_bytes()))
    assert rec.sha256 == _sha(image)
    assert Catalog.manifest(rec) == {
        "publisher": PUB,
        "offer": OFFER,
        "sku": SKU,
        "version": "2024.1.5",
        "sha256": _sha(image),
        "sizeBytes": image.stat().st_size,
        "virtualSizeBytes": 16 * MiB,
        "publishedAt": iso8601(clock.now()),
    }
    assert Catalog.manifest(rec)["publishedAt"] == "2024-06-10T06:13:20.250Z"


def test_publish_with_kernel_initrd_and_cmdline(catalog: Catalog, blobs: Path, src: Path) -> None:
    image = _qcow2(src, "a.qcow2")
    kernel = src / "vmlinuz"
    kernel.write_bytes(b"MZ kernel bytes" * 100)
    initrd = src / "initrd.img"
    initrd.write_bytes(b"initrd bytes" * 100)
    rec = catalog.publish(
        PUB, OFFER, SKU, "1.0", image, kernel=kernel, initrd=initrd, cmdline="console=ttyS0"
    )
    assert rec.kernel_sha256 == _sha(kernel)
    assert rec.initrd_sha256 == _sha(initrd)
    assert rec.kernel_path == blobs.absolute() / f"{_sha(kernel)}.kernel"
    assert rec.initrd_path == blobs.absolute() / f"{_sha(initrd)}.initrd"
    assert rec.kernel_path.read_bytes() == kernel.read_bytes()
    m = Catalog.manifest(rec)
    assert (m["kernelSha256"], m["initrdSha256"], m["cmdline"]) == (
        _sha(kernel),
        _sha(initrd),
        "console=ttyS0",
    )
    assert len(_left(blobs)) == 3


def test_same_bytes_under_two_versions_share_one_blob(
    catalog: Catalog, blobs: Path, src: Path
) -> None:
    image = _qcow2(src, "a.qcow2")
    a = catalog.publish(PUB, OFFER, SKU, "1.0", image)
    b = catalog.publish(PUB, OFFER, SKU, "1.1", image)
    assert a.path == b.path
    assert _left(blobs) == [a.path.name]


# --- refusals: nothing is left behind ----------------------------------------------


def _refused(
    catalog: Catalog, store: Store, blobs: Path, code: str, version: str = "1.0.0", **kw: object
) -> CatalogError:
    before = _left(blobs)
    source = kw.pop("source")
    with pytest.raises(CatalogError) as ei:
        catalog.publish(PUB, OFFER, SKU, version, source, **kw)  # type: ignore[arg-type]
    assert ei.value.code == code, ei.value
    assert _left(blobs) == before  # no .part, no blob
    if code != "AlreadyExists":
        assert store.images.get(PUB, OFFER, SKU, version) is None
    return ei.value


def test_image_with_a_backing_file_is_rejected(
    catalog: Catalog, store: Store, blobs: Path, src: Path
) -> None:
    base = _qcow2(src, "base.qcow2")
    overlay = src / "overlay.qcow2"
    qemuimg.create_overlay(overlay, base)
    err = _refused(catalog, store, blobs, "BackingFile", source=overlay)
    assert str(base) in str(err)
    assert "1.0.0: has its own backing file" in str(err)


def test_image_with_a_data_file_is_rejected(
    catalog: Catalog, store: Store, blobs: Path, src: Path
) -> None:
    image = src / "ext.qcow2"
    qemuimg.create(image, 16 * MiB, data_file=src / "ext.data")
    _refused(catalog, store, blobs, "DataFile", source=image)


def test_truncated_image_is_rejected(
    catalog: Catalog, store: Store, blobs: Path, src: Path
) -> None:
    image = _qcow2(src, "a.qcow2", data_mib=4)
    os.truncate(image, image.stat().st_size // 2)
    err = _refused(catalog, store, blobs, "CheckFailed", source=image)
    assert "qemu-img check" in str(err)


@pytest.mark.parametrize("kind", ["raw", "text", "empty"])
def test_non_qcow2_is_rejected(
    catalog: Catalog, store: Store, blobs: Path, src: Path, kind: str
) -> None:
    if kind == "raw":
        raw = src / "disk.raw"
        qemuimg.create(raw, 4 * MiB, fmt="raw")
        source: Path | io.BytesIO = raw
    elif kind == "text":
        source = io.BytesIO(b"#!/bin/sh\necho not a disk\n")
    else:
        source = io.BytesIO(b"")
    err = _refused(catalog, store, blobs, "NotQcow2", source=source)
    assert "not a qcow2 image" in str(err)
    assert ".part" not in str(err)  # the message names the upload, not our temp file


def test_duplicate_version_is_rejected(
    catalog: Catalog, store: Store, blobs: Path, src: Path
) -> None:
    first = catalog.publish(PUB, OFFER, SKU, "1.0.0", _qcow2(src, "a.qcow2"))
    err = _refused(catalog, store, blobs, "AlreadyExists", source=_qcow2(src, "b.qcow2"))
    assert err.status == 409
    assert "kvmss/tiny/busybox/1.0.0" in str(err)
    assert store.images.get(PUB, OFFER, SKU, "1.0.0") == first


def test_duplicate_found_only_at_insert_removes_what_it_placed(
    catalog: Catalog, store: Store, blobs: Path, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another controller published the version between our check and our insert.
    shared = _qcow2(src, "a.qcow2")
    first = catalog.publish(PUB, OFFER, SKU, "1.0.0", shared)
    monkeypatch.setattr(store.images, "get", lambda *a: None)
    _refused(catalog, store, blobs, "AlreadyExists", source=_qcow2(src, "b.qcow2"))
    # A blob that was there before (same bytes as the stored version) stays.
    _refused(catalog, store, blobs, "AlreadyExists", source=shared)
    assert first.path.exists()


def test_too_large_is_rejected(store: Store, blobs: Path, clock: FakeClock, src: Path) -> None:
    small = Catalog(store, blobs, clock, max_bytes=64 * 1024)
    err = _refused(small, store, blobs, "TooLarge", source=_qcow2(src, "a.qcow2"))
    assert err.status == 413


@pytest.mark.parametrize(
    ("version", "kw", "code", "message"),
    [
        ("latest", {}, "InvalidVersion", "version: version 'latest'"),
        ("1.x", {}, "InvalidVersion", "version: version '1.x'"),
        ("1.0", {"initrd": "initrd"}, "InvalidParameter", "initrd: needs a kernel"),
        ("1.0", {"cmdline": "quiet"}, "InvalidParameter", "cmdline: needs a kernel"),
        ("1.0", {"kernel": "missing"}, "InvalidParameter", "kernel: "),
    ],
)
def test_bad_parameters_are_rejected(
    catalog: Catalog,
    store: Store,
    blobs: Path,
    src: Path,
    version: str,
    kw: dict[str, str],
    code: str,
    message: str,
) -> None:
    image = _qcow2(src, "a.qcow2")
    (src / "initrd").write_bytes(b"x")
    paths = {k: src / v for k, v in kw.items() if k != "cmdline"}
    extra: dict[str, object] = {**kw, **paths}
    err = _refused(catalog, store, blobs, code, version=version, source=image, **extra)
    assert str(err).startswith(message)


def test_bad_publisher_is_rejected(catalog: Catalog, blobs: Path, src: Path) -> None:
    with pytest.raises(CatalogError, match=r"publisher: '\.\./etc' is invalid") as ei:
        catalog.publish("../etc", OFFER, SKU, "1.0", _qcow2(src, "a.qcow2"))
    assert ei.value.code == "InvalidParameter"
    assert _left(blobs) == []


# --- lookups --------------------------------------------------------------------------


def _publish_all(catalog: Catalog, src: Path, sku: str, versions: list[str]) -> None:
    for i, v in enumerate(versions):
        catalog.publish(PUB, OFFER, sku, v, _qcow2(src, f"{sku}-{i}.qcow2"))


def test_latest_is_the_newest_dotted_integer_whatever_the_publish_order(
    catalog: Catalog, src: Path
) -> None:
    _publish_all(catalog, src, "daily", ["2016.127.20180613", "2016.127.20180601"])
    _publish_all(catalog, src, "minor", ["1.10", "1.9", "1.2"])
    assert catalog.resolve(PUB, OFFER, "daily", "latest").version == "2016.127.20180613"
    assert catalog.resolve(PUB, OFFER, "minor", "latest").version == "1.10"
    assert [r.version for r in catalog.versions(PUB, OFFER, "minor")] == ["1.10", "1.9", "1.2"]
    assert [r.version for r in catalog.versions(PUB, OFFER, "daily")] == [
        "2016.127.20180613",
        "2016.127.20180601",
    ]
    # A newer version published later becomes latest.
    _publish_all(catalog, src, "minor", ["1.11"])
    assert catalog.resolve(PUB, OFFER, "minor", "latest").version == "1.11"
    assert catalog.resolve(PUB, OFFER, "minor", "1.9").version == "1.9"

    entries = catalog.offers()
    assert [(e.sku, e.versions, e.latest) for e in entries] == [
        ("daily", ("2016.127.20180613", "2016.127.20180601"), "2016.127.20180613"),
        ("minor", ("1.11", "1.10", "1.9", "1.2"), "1.11"),
    ]


def test_resolve_names_what_is_missing(catalog: Catalog, src: Path) -> None:
    with pytest.raises(CatalogError, match="no version of kvmss/tiny/busybox is published") as ei:
        catalog.resolve(PUB, OFFER, SKU, "latest")
    assert (ei.value.code, ei.value.status) == ("ImageNotFound", 404)
    _publish_all(catalog, src, SKU, ["1.0"])
    with pytest.raises(CatalogError, match=r"image kvmss/tiny/busybox/2\.0: not found") as ei:
        catalog.resolve(PUB, OFFER, SKU, "2.0")
    assert ei.value.code == "ImageNotFound"
    assert catalog.versions(PUB, OFFER, "other") == []


def test_a_new_catalog_on_the_same_store_sees_published_images(
    catalog: Catalog, store: Store, blobs: Path, clock: FakeClock, src: Path
) -> None:
    rec = catalog.publish(PUB, OFFER, SKU, "1.0", _qcow2(src, "a.qcow2"))
    again = Catalog(store, blobs, clock)
    got: ImageRecord = again.resolve(PUB, OFFER, SKU, "latest")
    assert got == rec
