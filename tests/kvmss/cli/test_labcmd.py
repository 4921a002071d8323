"""``kvmss lab`` commands where no lab process is needed: refusals and
answers are one line, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner

from kvmss.cli.main import main


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["lab", *args])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.stdout, r.stderr


def test_up_refuses_a_directory_holding_something_else(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    code, _out, err = run("up", "--dir", str(tmp_path))
    assert code == 1
    assert (
        err
        == f"kvmss: --dir {tmp_path}: not empty and holds no lab (no lab.json); choose another\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing touched


def test_up_refuses_a_directory_libvirt_cannot_reach(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir()
    os.chmod(private, 0o700)
    code, _out, err = run("up", "--dir", str(private / "lab"))
    assert code == 1
    assert f"{private} is not searchable by other users" in err
    assert err.count("\n") == 1
    assert not (private / "lab").exists()


def test_up_refuses_a_file(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("")
    code, _out, err = run("up", "--dir", str(f))
    assert code == 2  # click: not a directory
    assert "Traceback" not in err


def test_up_checks_its_sizes() -> None:
    code, _out, err = run("up", "--hosts", "0")
    assert code == 2
    assert "--hosts" in err


def test_status_and_down_of_no_lab(tmp_path: Path) -> None:
    code, out, _err = run("status", "--dir", str(tmp_path / "none"))
    assert code == 1
    assert out == f"no lab in {tmp_path / 'none'} (start one with: kvmss lab up)\n"
    code, out, _err = run("down", "--dir", str(tmp_path / "none"))
    assert code == 0
    assert out == f"no lab in {tmp_path / 'none'}\n"


def test_a_broken_state_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "lab.json").write_text('{"version": 1}')
    code, _out, err = run("status", "--dir", str(tmp_path))
    assert code == 1
    assert err == f"kvmss: {tmp_path / 'lab.json'}: dir: names None, not {str(tmp_path)!r}\n"
