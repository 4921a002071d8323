"""``kvmss lab`` on real TCG guests, through the same code path as
``make demo`` (1 host, 2 instances): up shows a Completed upgrade of both
instances; up again on the running lab is a no-op; down leaves no process,
domain, bridge or file behind; and a second up/down after that works too."""

from __future__ import annotations

import io
import os
import re
import sys
import uuid
from pathlib import Path

import libvirt
import pytest
from click.testing import CliRunner

from hostagent.network.bridge import bridge_exists
from kvmss.cli.main import main
from kvmss.client.screen import Screen
from kvmss.lab import procs
from kvmss.lab import run as lab
from kvmss.lab.down import down
from kvmss.lab.state import LabState
from tests.fixtures import TEST_ROOT

pytestmark = pytest.mark.guest

NAME = "labtest"  # not "demo": a `make demo` lab may run on this machine meanwhile


class Tee(io.StringIO):
    """Keeps what the lab prints, and shows it (pytest -s) as it comes."""

    def write(self, s: str) -> int:
        sys.stdout.write(s)
        return super().write(s)


def up(root: Path) -> tuple[lab.UpResult, str]:
    out = Tee()
    opts = lab.UpOptions(root=root, hosts=1, instances=2, scale_set=NAME)
    result = lab.up(opts, Screen(out, tty=False))
    return result, out.getvalue()


def history_row(text: str) -> list[str]:
    """The newest row of the printed history table."""
    lines = text.splitlines()
    i = next(i for i, x in enumerate(lines) if x.startswith("START "))
    header, row = lines[i], lines[i + 2]
    cols = [m.start() for m in re.finditer(r"\S+(?: \S+)*", header)]
    return [row[a:b].strip() for a, b in zip(cols, [*cols[1:], None], strict=True)]


def domains_under(root: Path) -> list[str]:
    conn = libvirt.open("qemu:///system")
    try:
        prefix = str(root) + "/"
        return [d.name() for d in conn.listAllDomains(0) if prefix in d.XMLDesc(0)]
    finally:
        conn.close()


def gone(pid: int, marker: str) -> bool:
    return not Path(f"/proc/{pid}").exists() or not procs.alive(pid, marker)


def check_down(root: Path, state: LabState, pids: dict[int, str]) -> None:
    out = io.StringIO()
    assert down(root, Screen(out, tty=False))
    text = out.getvalue()
    assert f"{state.hosts[0].name}: deleted 2 instances" in text
    for pid, marker in pids.items():
        assert gone(pid, marker), f"process {pid} ({marker}) still runs"
    assert domains_under(root) == []
    for slot in state.hosts:
        assert not bridge_exists(slot.bridge)
    assert not root.exists()


def test_lab_up_down_twice() -> None:
    TEST_ROOT.mkdir(parents=True, exist_ok=True)
    os.chmod(TEST_ROOT, 0o755)
    root = TEST_ROOT / f"lab-{uuid.uuid4().hex[:8]}"
    try:
        for round_ in (1, 2):
            result, text = up(root)
            state = result.state
            assert result.code == "Completed", text
            row = history_row(text)
            assert row[2:8] == ["Completed", "Platform", "kvmss:tiny:1:2", "2", "0", "0"], row
            assert "instance 0 (labtest-0) on host1: Healthy, image version 1" in text
            assert re.search(r"^RollingForward  0:00:\d\d  \[#{10}-{10}\]  1/2", text, re.M)
            assert f"export KVMSS_TOKEN_FILE={state.controller.token}" in text
            for token in (state.controller.token, state.host(state.hosts[0]).token):
                assert token.stat().st_mode & 0o777 == 0o600
                assert token.read_text().strip() not in text
            paths = [state.controller, state.host(state.hosts[0])]
            pids = {procs.read_pid(p.pid) or 0: str(p.config) for p in paths}
            assert all(procs.alive(pid, marker) for pid, marker in pids.items())
            assert len(domains_under(root)) == 2
            assert bridge_exists(state.hosts[0].bridge)

            if round_ == 1:
                # up again on the running lab: nothing restarts, nothing upgrades again
                again, text2 = up(root)
                assert again.code == "Completed"
                assert "controller: running" in text2
                assert "already published" in text2
                assert {procs.read_pid(p.pid) for p in paths} == set(pids)
                status = CliRunner().invoke(main, ["lab", "status", "--dir", str(root)])
                assert status.exit_code == 0, status.output
                assert status.output.count("answering") == 2
                assert "latest rolling upgrade: Completed to version 2" in status.output

            check_down(root, state, pids)
    finally:
        if root.exists():
            down(root, Screen(io.StringIO(), tty=False))
