"""bench/load.py, run small and short, still produces its whole report with
no error (so the benchmark cannot rot), and refuses bad options in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.loadmix import KINDS, MIX, Picker, parse_weights
from bench.loadreport import percentile

REPO = Path(__file__).resolve().parents[2]


def test_a_short_small_run_reports_every_kind_with_no_error(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "load.py"),
            "--duration=3",
            "--clients=6",
            "--instances=40",
            "--scale-sets=2",
            "--hosts=2",
            "--think=0.1",  # ~180 requests: every kind shows up
            f"--json={out}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    # 1 is a missed latency goal (a busy test machine); anything else is a failure
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["overall"]["errors"] == 0, report["error_examples"]
    assert report["overall"]["count"] >= 50
    reads = {"get_scale_set", "instance_view", "list_instances", "rolling_latest"}
    assert reads <= {k for k, r in report["kinds"].items() if r["count"] > 0}
    assert report["requests_per_second"] > 0
    assert report["cpu_cores"]["controller"] > 0
    assert report["goals"]["p99_ratio"] == pytest.approx(report["overall"]["p99_ms"] / 100, 0.01)
    table = proc.stdout
    for line in ("kind", "all", "requests/s:", "CPU, cores busy", "p99 / 100 ms goal:"):
        assert line in table
    assert "errors: 0 (goal 0, met)" in table
    assert "Traceback" not in proc.stderr


def test_bad_options_are_one_line_errors() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "load.py"), "--instances=10", "--scale-sets=3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--instances: must be --scale-sets times a capacity" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_weights_replace_the_mix_and_name_what_is_wrong() -> None:
    import random

    picker = Picker(random.Random(0), 3, 10, parse_weights("patch_tag=0,start_upgrade=0"))
    kinds = {picker.next().kind for _ in range(2000)}
    assert kinds == set(KINDS) - {"patch_tag", "start_upgrade"}
    assert sum(w for w, _ in MIX.values()) == pytest.approx(100)
    with pytest.raises(ValueError, match="'nope' is not a request kind"):
        parse_weights("nope=1")
    with pytest.raises(ValueError, match="must be a number >= 0"):
        parse_weights("patch_tag=-1")


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0
