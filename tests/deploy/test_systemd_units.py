"""The shipped systemd units: checked by systemd's own ``systemd-analyze``
(verify, and the offline security review) and held to the contract that the
install script and the Vagrant provisioning rely on.

systemd is installed on the build machines but is not PID 1, so the units are
verified in a temporary root (``--root``): the distribution's own unit files
(sysinit.target, libvirtd.service, ...), the units under test in
/etc/systemd/system, and this checkout's console scripts at the contract
paths under /opt/kvmss/venv/bin. Nothing is written to the real /opt or /etc.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.daemon.server import ControllerConfig
from hostagent.daemon.config import AgentConfig
from tests.agentproc import REPO

UNITS = REPO / "systemd"
VENV_BIN = REPO / ".venv" / "bin"
SYSTEM_UNITS = Path("/lib/systemd/system")
PREFIX = "/opt/kvmss/venv/bin"
AGENT = "kvmss-agent.service"
CONTROLLER = "kvmss-controller.service"
EXEC_START = {
    AGENT: f"{PREFIX}/kvmss-agent serve --config /etc/kvmss/agent.yaml",
    CONTROLLER: f"{PREFIX}/kvmss controller serve --config /etc/kvmss/controller.yaml",
}
# systemd-analyze security, 0-100 (shown as 0.0-10.0); a unit without any
# sandboxing scores 96. The agent needs root, netlink and the host network.
EXPOSURE_LIMIT = {AGENT: 35, CONTROLLER: 20}

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Sections to keys to every value given (systemd allows repeats), with
    comments dropped and backslash continuations joined."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"assignment outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not an assignment: {line}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def load(name: str) -> Unit:
    return parse_unit((UNITS / name).read_text())


def one(unit: Unit, section: str, key: str) -> str:
    values = unit[section].get(key, [])
    assert len(values) == 1, f"[{section}] {key}: expected one value, got {values}"
    return values[0]


def words(unit: Unit, section: str, key: str) -> set[str]:
    return {w for v in unit[section].get(key, []) for w in v.split()}


def seconds(value: str) -> float:
    """A systemd time span of the forms used here: 30, 30s, 5min, 1min 30s."""
    units = {"": 1, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert parts and "".join(n + u for n, u in parts) == value.replace(" ", ""), value
    return sum(float(n) * units[u] for n, u in parts)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file system root holding the distribution's units, ours, and the
    console scripts at the contract paths."""
    root = tmp_path_factory.mktemp("sysroot")
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    bindir = root / PREFIX.lstrip("/")
    bindir.mkdir(parents=True)
    for script in ("kvmss", "kvmss-agent"):
        shutil.copy2(VENV_BIN / script, bindir / script)
    (root / "etc/systemd/system").mkdir(parents=True)
    return root


@pytest.fixture
def installed(root: Path) -> Iterator[Path]:
    """``root`` with the shipped units in its /etc/systemd/system (put back
    after a test that broke one)."""
    dest = root / "etc/systemd/system"
    for name in (AGENT, CONTROLLER):
        shutil.copy(UNITS / name, dest / name)
    yield root
    for name in (AGENT, CONTROLLER):
        shutil.copy(UNITS / name, dest / name)


def unit_path(root: Path, name: str) -> Path:
    return root / "etc/systemd/system" / name


def verify(root: Path, *names: str) -> tuple[int, str]:
    """systemd-analyze verify's exit status and everything it said. systemd
    only warns about unknown keys and unparsable values, so a unit passes
    only with status 0 and nothing said."""
    proc = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "--man=no", *names],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, (proc.stdout + proc.stderr).strip()


@pytest.mark.parametrize("name", [AGENT, CONTROLLER])
def test_shipped_unit_passes_systemd_analyze_verify(installed: Path, name: str) -> None:
    status, said = verify(installed, name)
    assert (status, said) == (0, "")


@pytest.mark.parametrize(
    ("name", "old", "new", "expect"),
    [
        (AGENT, "bin/kvmss-agent serve", "bin/kvmss-agentd serve", "is not executable"),
        (CONTROLLER, "ExecStart=/opt", "ExecStart=opt", "Neither a valid executable name"),
        (AGENT, "WatchdogSec=", "WatchdogSecs=", "Unknown key"),
        (CONTROLLER, "Type=notify", "Type=notifyy", "Failed to parse service type"),
        (AGENT, "ProtectSystem=strict", "ProtectSystem=strictly", "Failed to parse"),
    ],
)
def test_broken_unit_fails_verify(
    installed: Path, name: str, old: str, new: str, expect: str
) -> None:
    unit = unit_path(installed, name)
    text = unit.read_text()
    assert old in text
    unit.write_text(text.replace(old, new, 1))
    status, said = verify(installed, name)
    assert (status, said) != (0, "")
    assert expect in said


def test_verify_fails_when_the_contract_executable_is_missing(installed: Path) -> None:
    script = installed / PREFIX.lstrip("/") / "kvmss"
    saved = script.read_bytes()
    script.unlink()
    try:
        status, said = verify(installed, CONTROLLER)
    finally:
        script.write_bytes(saved)
        script.chmod(0o755)
    assert status != 0
    assert f"{PREFIX}/kvmss is not executable" in said


def security(root: Path, name: str) -> tuple[int, float]:
    """systemd-analyze's offline security review of ``name``: its exit status
    against the unit's limit, and the overall exposure (0-100)."""
    limit = f"--threshold={EXPOSURE_LIMIT[name]}"
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={root}", limit, name],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    overall = re.search(r"Overall exposure level for \S+: ([\d.]+)", proc.stdout)
    assert overall is not None, proc.stdout + proc.stderr
    return proc.returncode, float(overall.group(1)) * 10


@pytest.mark.parametrize("name", [AGENT, CONTROLLER])
def test_security_exposure_stays_low(installed: Path, name: str) -> None:
    status, exposure = security(installed, name)
    assert exposure <= EXPOSURE_LIMIT[name]
    assert status == 0


def test_security_threshold_fails_an_unhardened_unit(installed: Path) -> None:
    """The exposure check can fail: the agent without its sandbox lines."""
    unit = unit_path(installed, AGENT)
    kept = [
        line
        for line in unit.read_text().splitlines()
        if not re.match(r"(Protect|Private|Restrict|Capability|NoNew|SystemCall|Lock)", line)
    ]
    unit.write_text("\n".join(kept) + "\n")
    assert verify(installed, AGENT) == (0, "")  # still a valid unit, only unsandboxed
    status, exposure = security(installed, AGENT)
    assert exposure > 90
    assert status != 0


@pytest.mark.parametrize("name", [AGENT, CONTROLLER])
def test_service_contract(name: str) -> None:
    unit = load(name)
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "NotifyAccess") == "main"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert 1 <= seconds(one(unit, "Service", "RestartSec")) <= 60
    assert 10 <= seconds(one(unit, "Service", "WatchdogSec")) <= 120
    assert one(unit, "Service", "ExecStart") == EXEC_START[name]
    assert one(unit, "Service", "ConfigurationDirectory") == "kvmss"
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    assert {"network-online.target"} <= words(unit, "Unit", "After") & words(unit, "Unit", "Wants")
    for key, value in {
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
    }.items():
        assert one(unit, "Service", key) == value, key


@pytest.mark.parametrize("name", [AGENT, CONTROLLER])
def test_exec_start_is_accepted_by_the_real_command(name: str) -> None:
    """The ExecStart command line, run from this checkout's venv, names a
    command and options that exist (``--help`` after them exits 0 only then)."""
    argv = shlex.split(one(load(name), "Service", "ExecStart"))
    exe = Path(argv[0])
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert exe.name in scripts
    proc = subprocess.run(
        [str(VENV_BIN / exe.name), *argv[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--config" in proc.stdout


@pytest.mark.parametrize("name", [AGENT, CONTROLLER])
def test_exec_start_with_a_missing_config_fails_in_one_line(tmp_path: Path, name: str) -> None:
    """What the journal shows for a host not configured yet: one line naming
    the file, and a failure status (so Restart=on-failure retries)."""
    argv = shlex.split(one(load(name), "Service", "ExecStart"))
    missing = tmp_path / "missing.yaml"
    proc = subprocess.run(
        [str(VENV_BIN / Path(argv[0]).name), *argv[1:-1], str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(missing) in lines[0] and "cannot read" in lines[0]


def test_agent_unit_keeps_what_libvirt_and_the_bridge_need() -> None:
    unit = load(AGENT)
    service = unit["Service"]
    assert {"libvirtd.service", "virtlogd.service"} <= words(unit, "Unit", "After")
    assert {"libvirtd.service", "virtlogd.service"} <= words(unit, "Unit", "Wants")
    assert "User" not in service and "DynamicUser" not in service  # root: libvirt, netlink
    assert "CAP_NET_ADMIN" in words(unit, "Service", "CapabilityBoundingSet")
    assert {"AF_UNIX", "AF_NETLINK", "AF_INET"} <= words(unit, "Service", "RestrictAddressFamilies")
    # Each of these hides the host network or /dev/kvm from the agent.
    for key in ("PrivateNetwork", "PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"):
        assert key not in service, key
    assert "PrivateUsers" not in service


def test_controller_unit_has_no_privileges() -> None:
    unit = load(CONTROLLER)
    assert unit["Service"]["CapabilityBoundingSet"] == [""]
    assert one(unit, "Service", "PrivateDevices") == "yes"
    assert one(unit, "Service", "UMask") == "0077"


def test_default_paths_are_writable_under_protect_system_strict() -> None:
    """ProtectSystem=strict leaves only the StateDirectory= writable: the
    daemons' default state paths must lie inside it."""
    agent_state = {Path("/var/lib", d) for d in words(load(AGENT), "Service", "StateDirectory")}
    ctl_state = {Path("/var/lib", d) for d in words(load(CONTROLLER), "Service", "StateDirectory")}
    agent = AgentConfig.from_dict({"name": "host1", "token": "t" * 16})
    ctl = ControllerConfig.from_dict({"token": "t" * 16})
    for path, states in (
        (agent.storage_dir, agent_state),
        (ctl.database, ctl_state),
        (ctl.blob_dir, ctl_state),
    ):
        assert any(path.is_relative_to(s) for s in states), (path, states)
    for name in (AGENT, CONTROLLER):
        config = Path(shlex.split(one(load(name), "Service", "ExecStart"))[-1])
        assert config.parent == Path("/etc", one(load(name), "Service", "ConfigurationDirectory"))
