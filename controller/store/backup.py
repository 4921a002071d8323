"""A consistent copy of the controller's SQLite database, taken while it runs.

SQLite's online backup API copies the database page by page inside read
transactions, so the copy is one committed state even while upgrades write
(WAL mode lets them go on). The copy is written to ``<out>.part``, checked
with ``PRAGMA integrity_check``, fsync'd, made 0600 (it holds agent tokens)
and renamed, so ``out`` is either a whole, valid database or absent.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from kvmss.base import atomicfile


class BackupError(Exception):
    """The database cannot be read, or the copy cannot be written or is broken."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size_bytes: int
    pages: int
    tables: int


def backup(database: Path, out: Path) -> BackupResult:
    if not database.is_file():
        raise BackupError(f"database {database} does not exist")
    if out.exists() and out.is_dir():
        raise BackupError(f"output {out} is a directory; give a file name")
    if out.absolute() == database.absolute():
        raise BackupError("output must not be the database itself")
    if not out.absolute().parent.is_dir():
        raise BackupError(f"output directory {out.absolute().parent} does not exist")
    part = out.with_name(out.name + ".part")
    part.unlink(missing_ok=True)
    try:
        src = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise BackupError(f"cannot open {database}: {e}") from None
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        dst = sqlite3.connect(part)
        try:
            src.backup(dst, pages=256)
            dst.execute("PRAGMA journal_mode = DELETE")
            (check,) = dst.execute("PRAGMA integrity_check").fetchone()
            if check != "ok":
                raise BackupError(f"the copy fails integrity_check: {check}")
            (pages,) = dst.execute("PRAGMA page_count").fetchone()
            (tables,) = dst.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
            ).fetchone()
        finally:
            dst.close()
        with part.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(part, out)
        atomicfile.fsync_dir(out.absolute().parent)
    except sqlite3.Error as e:
        part.unlink(missing_ok=True)
        raise BackupError(f"backup of {database} failed: {e}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    return BackupResult(out, out.stat().st_size, int(pages), int(tables))
