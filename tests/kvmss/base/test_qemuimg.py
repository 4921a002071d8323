"""kvmss.base.qemuimg against the real qemu-img."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from kvmss.base import qemuimg

MiB = 1 << 20


def _raw_with_data(path: Path, size: int, data_bytes: int) -> bytes:
    """A raw disk of ``size`` bytes whose first ``data_bytes`` are random."""
    data = os.urandom(data_bytes)
    with open(path, "wb") as f:
        f.write(data)
        f.truncate(size)
    return data


def _qcow2_with_data(tmp_path: Path, name: str = "data.qcow2", data_mib: int = 4) -> Path:
    raw = tmp_path / f"{name}.raw"
    _raw_with_data(raw, 64 * MiB, data_mib * MiB)
    out = tmp_path / name
    qemuimg.convert(raw, out, src_format="raw")
    raw.unlink()
    return out


def test_create_makes_empty_qcow2_of_the_size(tmp_path: Path) -> None:
    disk = tmp_path / "d.qcow2"
    qemuimg.create(disk, 3 << 30)
    info = qemuimg.info(disk, "qcow2")
    assert info.format == "qcow2"
    assert info.virtual_size == 3 << 30
    assert info.backing_file is None
    assert info.data_file is None
    assert info.cluster_size == 65536
    assert info.dirty is False
    assert disk.stat().st_size < MiB
    assert disk.stat().st_mode & 0o777 == 0o600  # a guest's data: its owner's only


def test_create_raw(tmp_path: Path) -> None:
    disk = tmp_path / "d.raw"
    qemuimg.create(disk, 10 * MiB, fmt="raw")
    assert disk.stat().st_size == 10 * MiB
    assert qemuimg.info(disk, "raw").format == "raw"


def test_create_never_overwrites(tmp_path: Path) -> None:
    disk = tmp_path / "d.qcow2"
    disk.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        qemuimg.create(disk, MiB)
    assert disk.read_bytes() == b"precious"


def test_create_rejects_bad_size_and_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size_bytes"):
        qemuimg.create(tmp_path / "a", 0)
    with pytest.raises(ValueError, match="format '-o' is not supported"):
        qemuimg.create(tmp_path / "b", MiB, fmt="-o")
    assert list(tmp_path.iterdir()) == []


def test_failed_create_leaves_nothing(tmp_path: Path) -> None:
    disk = tmp_path / "d.qcow2"
    # qcow2 cannot be this large: qemu-img refuses, and the claimed name is released.
    with pytest.raises(qemuimg.QemuImgError) as ei:
        qemuimg.create(disk, 1 << 62)
    assert ei.value.returncode == 1
    assert not disk.exists()


def test_overlay_is_small_and_names_its_backing_absolutely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = _qcow2_with_data(tmp_path, "base.qcow2", data_mib=8)
    monkeypatch.chdir(tmp_path)
    qemuimg.create_overlay(Path("ov.qcow2"), Path("base.qcow2"))
    ov = tmp_path / "ov.qcow2"
    info = qemuimg.info(ov, "qcow2")
    assert info.backing_file == str(base)
    assert info.backing_format == "qcow2"
    assert info.virtual_size == 64 * MiB
    assert ov.stat().st_size < MiB < base.stat().st_size
    assert ov.stat().st_mode & 0o777 == 0o600


def test_overlay_reads_through_to_its_backing(tmp_path: Path) -> None:
    raw = tmp_path / "base.raw"
    data = _raw_with_data(raw, 16 * MiB, MiB)
    qemuimg.create_overlay(tmp_path / "ov.qcow2", raw, backing_fmt="raw")
    flat = tmp_path / "flat.raw"
    qemuimg.convert(tmp_path / "ov.qcow2", flat, src_format="qcow2", dst_format="raw")
    with open(flat, "rb") as f:
        assert f.read(MiB) == data


def test_overlay_can_grow_but_never_overwrites(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    qemuimg.create(base, 64 * MiB)
    ov = tmp_path / "ov.qcow2"
    qemuimg.create_overlay(ov, base, size_bytes=128 * MiB)
    assert qemuimg.info(ov, "qcow2").virtual_size == 128 * MiB
    before = ov.read_bytes()
    with pytest.raises(FileExistsError):
        qemuimg.create_overlay(ov, base)
    assert ov.read_bytes() == before


def test_overlay_on_missing_backing_fails_and_leaves_nothing(tmp_path: Path) -> None:
    ov = tmp_path / "ov.qcow2"
    with pytest.raises(FileNotFoundError, match="backing file"):
        qemuimg.create_overlay(ov, tmp_path / "nope.qcow2")
    assert not ov.exists()


def test_info_with_explicit_format_does_not_trust_the_header(tmp_path: Path) -> None:
    # A raw disk whose guest wrote a qcow2 header pointing at a host file.
    evil = tmp_path / "evil.qcow2"
    qemuimg.create(evil, MiB)
    qemuimg.create_overlay(tmp_path / "pose.qcow2", evil)
    pose_bytes = (tmp_path / "pose.qcow2").read_bytes()
    disk = tmp_path / "guest.raw"
    disk.write_bytes(pose_bytes)
    probed = qemuimg.info(disk)
    assert probed.format == "qcow2"
    assert probed.backing_file is not None
    told = qemuimg.info(disk, "raw")
    assert told.format == "raw"
    assert told.backing_file is None


def test_info_reports_data_file(tmp_path: Path) -> None:
    disk = tmp_path / "d.qcow2"
    qemuimg.create(disk, MiB, data_file=tmp_path / "d,data.raw")
    assert (tmp_path / "d,data.raw").stat().st_size == MiB
    assert qemuimg.info(disk, "qcow2").data_file == f"{tmp_path}/d,data.raw"


def test_info_error_carries_command_exit_code_and_stderr(tmp_path: Path) -> None:
    missing = tmp_path / "missing.qcow2"
    with pytest.raises(qemuimg.QemuImgError) as ei:
        qemuimg.info(missing, "qcow2")
    err = ei.value
    assert err.returncode == 1
    assert err.cmd[:2] == ["qemu-img", "info"]
    assert str(missing) in err.cmd
    assert "No such file" in err.stderr
    assert "exit code 1" in str(err)
    assert "No such file" in str(err)


def test_info_runs_under_the_inspection_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = tmp_path / "d.qcow2"
    qemuimg.create(disk, MiB)
    # 8 MiB of address space is too little for qemu-img even to load: the
    # limit is really applied to the process.
    monkeypatch.setattr(qemuimg, "INSPECT_ADDRESS_SPACE_BYTES", 8 * MiB)
    with pytest.raises(qemuimg.QemuImgError):
        qemuimg.info(disk, "qcow2")
    monkeypatch.undo()
    assert qemuimg.info(disk, "qcow2").virtual_size == MiB


def test_check_good_image(tmp_path: Path) -> None:
    disk = _qcow2_with_data(tmp_path)
    res = qemuimg.check(disk)
    assert res.ok
    assert (res.corruptions, res.leaks, res.check_errors, res.exit_code) == (0, 0, 0, 0)
    assert not res.truncated
    assert res.reason() == ""


def test_check_truncated_in_the_data_reports_corruptions(tmp_path: Path) -> None:
    disk = _qcow2_with_data(tmp_path)
    size = disk.stat().st_size
    os.truncate(disk, size // 2)
    res = qemuimg.check(disk)
    assert not res.ok
    assert res.corruptions > 0
    assert res.exit_code == 2
    assert "corruptions" in res.reason()


def test_check_truncated_in_the_metadata_fails(tmp_path: Path) -> None:
    # Cut the file inside its L1 table: qemu-img follows no L2 table and
    # reports nothing, but whole clusters the image needs are gone.
    disk = _qcow2_with_data(tmp_path)
    with open(disk, "rb") as f:
        header = f.read(48)
    l1_offset = struct.unpack(">Q", header[40:48])[0]
    os.truncate(disk, l1_offset)
    res = qemuimg.check(disk)
    assert not res.ok
    assert res.truncated
    assert "truncated" in res.reason()


def test_check_every_truncation_by_a_cluster_or_more_fails(tmp_path: Path) -> None:
    disk = _qcow2_with_data(tmp_path, data_mib=1)
    original = disk.read_bytes()
    cluster = 65536
    for cut in range(cluster, len(original), cluster):
        disk.write_bytes(original[: len(original) - cut])
        assert not qemuimg.check(disk).ok, f"truncated by {cut} bytes but check passed"


def test_check_leaks_alone_are_ok(tmp_path: Path) -> None:
    disk = _qcow2_with_data(tmp_path)
    # Drop the first L2 entry: its data cluster is still counted but no
    # longer referenced, which is a leak.
    with open(disk, "r+b") as f:
        header = f.read(48)
        f.seek(struct.unpack(">Q", header[40:48])[0])
        l2_offset = struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00
        f.seek(l2_offset)
        f.write(b"\0" * 8)
    res = qemuimg.check(disk)
    assert res.exit_code == 3
    assert res.leaks == 1
    assert res.corruptions == 0
    assert res.ok


def test_check_never_opens_the_backing_file(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    qemuimg.create(base, MiB)
    ov = tmp_path / "ov.qcow2"
    qemuimg.create_overlay(ov, base)
    base.unlink()
    assert qemuimg.check(ov).ok


def test_check_of_a_file_that_is_not_qcow2_raises(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"not an image")
    with pytest.raises(qemuimg.QemuImgError) as ei:
        qemuimg.check(junk)
    assert ei.value.returncode == 1


def test_check_of_raw_raises_unsupported(tmp_path: Path) -> None:
    disk = tmp_path / "d.raw"
    qemuimg.create(disk, MiB, fmt="raw")
    with pytest.raises(qemuimg.QemuImgError) as ei:
        qemuimg.check(disk, "raw")
    assert ei.value.returncode == 63


def test_convert_round_trip_keeps_the_bytes(tmp_path: Path) -> None:
    raw = tmp_path / "a.raw"
    data = _raw_with_data(raw, 8 * MiB, 3 * MiB)
    q = tmp_path / "a.qcow2"
    qemuimg.convert(raw, q, src_format="raw")
    info = qemuimg.info(q, "qcow2")
    assert info.format == "qcow2"
    assert info.virtual_size == 8 * MiB
    back = tmp_path / "b.raw"
    qemuimg.convert(q, back, src_format="qcow2", dst_format="raw")
    got = back.read_bytes()
    assert got[: 3 * MiB] == data
    assert got[3 * MiB :] == bytes(5 * MiB)


def test_convert_compress_makes_a_smaller_standalone_image(tmp_path: Path) -> None:
    raw = tmp_path / "a.raw"
    with open(raw, "wb") as f:
        f.write(b"kvmss " * (4 * MiB // 6))
    plain = tmp_path / "plain.qcow2"
    small = tmp_path / "small.qcow2"
    qemuimg.convert(raw, plain, src_format="raw")
    qemuimg.convert(raw, small, src_format="raw", compress=True)
    assert small.stat().st_size < plain.stat().st_size // 4
    assert qemuimg.check(small).ok
    assert qemuimg.info(small, "qcow2").backing_file is None


def test_convert_compress_needs_qcow2(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="compress"):
        qemuimg.convert(
            tmp_path / "a", tmp_path / "b", src_format="raw", dst_format="raw", compress=True
        )


def test_failed_convert_leaves_no_output(tmp_path: Path) -> None:
    junk = tmp_path / "junk.qcow2"
    junk.write_bytes(b"x" * 4096)
    dst = tmp_path / "out.qcow2"
    with pytest.raises(qemuimg.QemuImgError):
        qemuimg.convert(junk, dst, src_format="qcow2")
    assert not dst.exists()
