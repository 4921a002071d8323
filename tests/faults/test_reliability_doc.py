"""docs/reliability.md has a measured row for every registered fault
scenario, and the report that writes it keeps rows it has no new record for."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import record, report
from tests.faults.scenarios import SCENARIOS


def test_every_registered_scenario_has_a_row_in_the_document() -> None:
    rows = report.rows_in(report.DOC.read_text())
    missing = sorted(set(SCENARIOS) - set(rows))
    assert not missing, (
        f"docs/reliability.md has no row for {missing}: run the scenarios, then"
        " `python -m tests.faults.report`"
    )


def test_registry_ids_name_records() -> None:
    for sid, text in SCENARIOS.items():
        assert sid == sid.strip().lower() and " " not in sid and "/" not in sid, sid
        assert text and "\n" not in text and "|" not in text, sid


def test_report_renders_records_and_keeps_other_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KVMSS_RELIABILITY_DIR", str(tmp_path / "records"))
    record.record(
        "a-fresh-one",
        instances=3,
        fault="controller SIGKILL at committed",
        outcome="Completed",
        out_of_service_max=1,
        batch_size=1,
        data_disk_bytes_changed=0,
        duration_s=71.6,
    )
    record.record("stray", outcome="Faulted")
    assert set(record.load_all()) == {"a-fresh-one", "stray"}
    assert record.load_all()["a-fresh-one"]["recorded_at"]

    doc = tmp_path / "reliability.md"
    kept = "| `an-old-one` | 2 | agent SIGSTOP | Faulted | 1 (1) | 0 | 90 s |"
    doc.write_text(f"# old\n\n{kept}\n| `a-fresh-one` | stale |\n")
    registry = {"an-old-one": "kept from before", "a-fresh-one": "measured now", "never": "n"}
    monkeypatch.setattr(report, "SCENARIOS", registry)
    assert report.main([str(doc)]) == 0
    text = doc.read_text()
    rows = report.rows_in(text)
    assert rows["an-old-one"] == kept
    assert rows["a-fresh-one"] == (
        "| `a-fresh-one` | 3 | controller SIGKILL at committed | Completed | 1 (1) | 0 | 72 s |"
    )
    assert rows["stray"].startswith("| `stray` (not registered) |")
    assert "never" not in rows and "Not measured yet: `never`." in text
    assert "- `a-fresh-one`: measured now" in text


def test_the_report_tool_refuses_an_option_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        report.main(["--bogus"])
    assert e.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
