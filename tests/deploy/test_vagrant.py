"""The Vagrant lab (Vagrantfile, vagrant/): checked without creating a VM.

``vagrant validate`` and ``vagrant status`` run on the real Vagrantfile with
the installed vagrant and vagrant-libvirt (no box is downloaded, nothing is
created in libvirt), with a temporary VAGRANT_HOME and dotfile directory so
nothing is left behind; the machines' settings are read back through
vagrant's own Ruby API. The provisioning pieces that run inside the VMs are
run here for real where systemd is not needed: the configuration writer
against the daemons' own configuration classes, and the host registration
against a real controller and a real host agent.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bench.served import free_port
from controller.daemon.server import ControllerConfig
from hostagent.daemon.config import AgentConfig
from tests.agentproc import REPO, AgentProcess
from tests.fixtures import storage_root
from tests.servedcontroller import served_controller

VAGRANT = shutil.which("vagrant")
needs_vagrant = pytest.mark.skipif(
    VAGRANT is None, reason="vagrant is not installed (scripts/setup.sh installs it)"
)
SCRIPTS = sorted((REPO / "vagrant").glob("*.sh"))
LABCONFIG = REPO / "vagrant" / "labconfig.py"

# Reads the Vagrantfile through vagrant's own API and prints, per machine in
# definition order, what the lab depends on, as JSON.
DUMP_RB = r"""
require "vagrant"
require "json"
env = Vagrant::Environment.new(cwd: ARGV[0])
out = env.machine_names.map do |name|
  m = env.machine(name, :libvirt)
  vm = m.config.vm
  lv = m.provider_config
  {
    name: name, hostname: vm.hostname, box: vm.box,
    ips: vm.networks.select { |t, _| t == :private_network }.map { |_, o| o[:ip] },
    synced: vm.synced_folders.transform_values { |o| o[:type].to_s },
    memory: lv.memory, cpus: lv.cpus, nested: lv.nested, cpu_mode: lv.cpu_mode,
    driver: lv.driver,
    provisioners: vm.provisioners.map do |p|
      c = p.config
      {
        name: p.name.to_s, type: p.type.to_s,
        path: (c.path if p.type == :shell), inline: (c.inline if p.type == :shell),
        args: (c.args if p.type == :shell), env: (c.env if p.type == :shell),
        source: (c.source if p.type == :file), destination: (c.destination if p.type == :file),
      }
    end,
  }
end
puts JSON.generate(out)
"""


@pytest.fixture(scope="module")
def vagrant_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vagrant-home")


def vagrant_env(home: Path, dotfiles: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KVMSS_", "VAGRANT_"))}
    env.update(
        VAGRANT_HOME=str(home),
        VAGRANT_DOTFILE_PATH=str(dotfiles),
        VAGRANT_CHECKPOINT_DISABLE="1",  # no version check over the network
        VAGRANT_DEFAULT_PROVIDER="libvirt",
    )
    env.update(settings)
    return env


def vagrant(
    args: list[str],
    home: Path,
    dotfiles: Path,
    cwd: Path = REPO,
    settings: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    assert VAGRANT is not None
    return subprocess.run(
        [VAGRANT, *args],
        cwd=cwd,
        env=vagrant_env(home, dotfiles, **(settings or {})),
        capture_output=True,
        text=True,
        timeout=120,
    )


def machines(status_output: str) -> dict[str, str]:
    """Machine name -> state, in order, from ``vagrant status --machine-readable``."""
    out: dict[str, str] = {}
    for line in status_output.splitlines():
        fields = line.split(",")
        if len(fields) >= 4 and fields[2] == "state":
            out[fields[1]] = fields[3]
    return out


def dump(home: Path, dotfiles: Path, **settings: str) -> dict[str, dict[str, Any]]:
    """Machine name -> its settings as vagrant sees them, in definition order."""
    proc = subprocess.run(
        ["ruby", "-e", DUMP_RB, str(REPO)],
        env=vagrant_env(home, dotfiles, **settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return {m["name"]: m for m in json.loads(proc.stdout)}


# --- the Vagrantfile ------------------------------------------------------------


@needs_vagrant
@pytest.mark.parametrize("hosts", [1, 3])
def test_validate_and_machines(vagrant_home: Path, tmp_path: Path, hosts: int) -> None:
    dot = tmp_path / "dot"
    settings = {"KVMSS_HOSTS": str(hosts)}
    v = vagrant(["validate"], vagrant_home, dot, settings=settings)
    assert v.returncode == 0, v.stdout + v.stderr
    assert "validated successfully" in v.stdout
    names = [f"host{i}" for i in range(1, hosts + 1)]
    # One token per machine, made on this side, for root only.
    secrets = dot / "kvmss"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    tokens = {t.name: t.read_text() for t in secrets.iterdir()}
    assert sorted(tokens) == sorted(f"{n}.token" for n in [*names, "controller"])
    for t in secrets.iterdir():
        assert stat.S_IMODE(t.stat().st_mode) == 0o600
        assert len(t.read_text().strip()) == 64 and int(t.read_text(), 16) >= 0

    s = vagrant(["status", "--machine-readable"], vagrant_home, dot, settings=settings)
    assert s.returncode == 0, s.stderr
    assert machines(s.stdout) == {n: "not_created" for n in [*names, "controller"]}
    assert list(machines(s.stdout)) == [*names, "controller"]  # hosts come up first
    # The next command keeps the tokens (the VMs already hold them); none is printed.
    assert {t.name: t.read_text() for t in secrets.iterdir()} == tokens
    for value in tokens.values():
        assert value.strip() not in v.stdout + v.stderr + s.stdout + s.stderr


@needs_vagrant
def test_machine_settings(vagrant_home: Path, tmp_path: Path) -> None:
    dot = tmp_path / "dot"
    lab = dump(vagrant_home, dot, KVMSS_HOSTS="2")
    assert list(lab) == ["host1", "host2", "controller"]
    uploads = "/home/vagrant/.kvmss-lab"
    for m in lab.values():
        assert m["box"] == "debian/bookworm64"
        assert m["synced"]["/vagrant"] == "rsync"
        assert (m["nested"], m["cpu_mode"], m["driver"]) == (True, "host-passthrough", "kvm")
        names = [p["name"] for p in m["provisioners"]]
        # kvmss itself (from the rsync'd checkout) before its daemon is set up.
        role = "controller" if m["name"] == "controller" else "host"
        assert names.index("install") < names.index(role)
        install = next(p for p in m["provisioners"] if p["name"] == "install")
        assert install["inline"].startswith("bash /vagrant/scripts/install-kvmss.sh /vagrant ")
        for p in m["provisioners"]:
            if p["path"]:
                assert (REPO / p["path"]).is_file(), p["path"]
            # Tokens travel as files only: never in arguments or the environment.
            for value in [*(p["args"] or []), *(p["env"] or {}).values()]:
                for t in (dot / "kvmss").iterdir():
                    assert t.read_text().strip() not in str(value)
    for i in (1, 2):
        host = lab[f"host{i}"]
        assert host["ips"] == [f"10.88.0.{10 + i}"]
        assert (host["memory"], host["cpus"]) == (4096, 2)
        files = [p for p in host["provisioners"] if p["type"] == "file"]
        # A host receives its own agent token and nothing else.
        assert [(Path(p["source"]).name, p["destination"]) for p in files] == [
            (f"host{i}.token", f"{uploads}/host{i}.token")
        ]
        run = next(p for p in host["provisioners"] if p["name"] == "host")
        assert run["path"] == "vagrant/provision-host.sh"
        ip = f"10.88.0.{10 + i}"
        assert run["args"] == [
            f"host{i}",
            f"{ip}:8090",
            f"10.77.{i}.0/24",
            f"{uploads}/host{i}.token",
        ]
    ctl = lab["controller"]
    assert ctl["ips"] == ["10.88.0.10"]
    files = [Path(p["source"]).name for p in ctl["provisioners"] if p["type"] == "file"]
    assert files == ["controller.token", "host1.token", "host2.token"]
    names = [p["name"] for p in ctl["provisioners"]]
    assert names[-2:] == ["controller", "register"]  # registration is the last step
    register = ctl["provisioners"][-1]
    assert register["args"] == [
        "http://10.88.0.10:8080",
        uploads,
        "host1=http://10.88.0.11:8090",
        "host2=http://10.88.0.12:8090",
    ]
    assert register["env"] == {"KVMSS_REGISTER_TIMEOUT": "900"}


@needs_vagrant
def test_settings_from_the_environment(vagrant_home: Path, tmp_path: Path) -> None:
    dot = tmp_path / "dot"
    lab = dump(vagrant_home, dot, KVMSS_LAB_NET="192.168.77", KVMSS_HOST_MEMORY="6144")
    assert lab["host1"]["ips"] == ["192.168.77.11"]
    assert lab["host1"]["memory"] == 6144
    assert lab["controller"]["provisioners"][-1]["args"][0] == "http://192.168.77.10:8080"


@needs_vagrant
@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("KVMSS_HOSTS", "0", "must be a whole number from 1 to 20"),
        ("KVMSS_HOSTS", "two", "must be a whole number from 1 to 20"),
        ("KVMSS_LAB_NET", "10.88", "must be three octets"),
        ("KVMSS_LAB_NET", "10.77.3", "kept for the hosts' guest bridges"),
    ],
)
def test_bad_setting_is_one_line(
    vagrant_home: Path, tmp_path: Path, name: str, value: str, reason: str
) -> None:
    proc = vagrant(["validate"], vagrant_home, tmp_path / "dot", settings={name: value})
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # no backtrace
    assert proc.stderr.startswith(f'kvmss Vagrantfile: {name}="{value}": ')
    assert reason in proc.stderr


@needs_vagrant
@pytest.mark.parametrize("damage", ["missing script", "unknown setting"])
def test_broken_vagrantfile_fails_validate(vagrant_home: Path, tmp_path: Path, damage: str) -> None:
    copy = tmp_path / "lab"
    copy.mkdir()
    shutil.copy(REPO / "Vagrantfile", copy / "Vagrantfile")
    shutil.copytree(REPO / "vagrant", copy / "vagrant")
    ok = vagrant(["validate"], vagrant_home, tmp_path / "dot", cwd=copy)
    assert ok.returncode == 0, ok.stdout + ok.stderr  # the copy itself is fine
    if damage == "missing script":
        (copy / "vagrant" / "provision-host.sh").unlink()
        expect = "provision-host.sh"
    else:
        text = (copy / "Vagrantfile").read_text()
        assert "lv.nested = true" in text
        (copy / "Vagrantfile").write_text(text.replace("lv.nested = true", "lv.nestd = true"))
        expect = "nestd"
    bad = vagrant(["validate"], vagrant_home, tmp_path / "dot", cwd=copy)
    assert bad.returncode != 0
    assert expect in bad.stdout + bad.stderr


# --- the provisioning scripts -----------------------------------------------------


def test_shellcheck_passes_on_the_provisioning_scripts() -> None:
    assert {p.name for p in SCRIPTS} >= {
        "provision-common.sh",
        "provision-controller.sh",
        "provision-host.sh",
        "register-hosts.sh",
    }
    proc = subprocess.run(["shellcheck", "-x", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_shellcheck_finds_a_fault(tmp_path: Path) -> None:
    # The same command on copies with one unquoted expansion added must fail.
    copy = tmp_path / "vagrant"
    shutil.copytree(REPO / "vagrant", copy)
    common = copy / "provision-common.sh"
    common.write_text(common.read_text() + "\nbroken() { echo $1; }\n")
    proc = subprocess.run(
        ["shellcheck", "-x", *sorted(map(str, copy.glob("*.sh")))], capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "provision-common.sh" in proc.stdout and "SC2086" in proc.stdout


# --- vagrant/labconfig.py ------------------------------------------------------------


def labconfig(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LABCONFIG), *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "daemon.token"
    path.write_text("lab-token-" + os.urandom(16).hex() + "\n")
    path.chmod(0o600)
    return path


def test_labconfig_agent_is_what_the_agent_loads(tmp_path: Path, token_file: Path) -> None:
    out = tmp_path / "etc" / "agent.yaml"
    args = ["agent", "--name", "host2", "--listen", "10.88.0.12:8090"]
    args += ["--subnet", "10.77.2.0/24", "--token-file", str(token_file), "--out", str(out)]
    first = labconfig(*args)
    assert (first.returncode, first.stdout) == (0, "changed\n"), first.stderr
    cfg = AgentConfig.load(out)
    assert (cfg.name, cfg.listen_host, cfg.listen_port) == ("host2", "10.88.0.12", 8090)
    assert (cfg.bridge_name, cfg.subnet) == ("kvmss0", "10.77.2.0/24")
    assert cfg.token == token_file.read_text().strip()
    assert (cfg.libvirt_uri, cfg.storage_dir) == ("qemu:///system", Path("/var/lib/kvmss/agent"))
    assert cfg.token not in out.read_text()  # the file names the token file only
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    again = labconfig(*args)
    assert (again.returncode, again.stdout) == (0, "unchanged\n")
    moved = labconfig(*[a if a != "10.77.2.0/24" else "10.77.9.0/24" for a in args])
    assert moved.stdout == "changed\n"
    assert AgentConfig.load(out).subnet == "10.77.9.0/24"


def test_labconfig_controller_is_what_the_controller_loads(
    tmp_path: Path, token_file: Path
) -> None:
    out = tmp_path / "controller.yaml"
    url = "http://10.88.0.10:8080"
    args = ["--listen", "10.88.0.10:8080", "--public-url", url, "--token-file", str(token_file)]
    proc = labconfig("controller", *args, "--out", str(out))
    assert (proc.returncode, proc.stdout) == (0, "changed\n"), proc.stderr
    cfg = ControllerConfig.load(out)
    assert (cfg.host, cfg.port, cfg.public_url) == ("10.88.0.10", 8080, "http://10.88.0.10:8080")
    assert cfg.database == Path("/var/lib/kvmss/controller/kvmss.db")
    assert cfg.token == token_file.read_text().strip()
    assert cfg.token not in out.read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "host_1", "--listen", "10.88.0.11:8090"], "labconfig.py agent: name: "),
        (["--name", "host1", "--listen", "0.0.0.0:8090"], "labconfig.py agent: listen: "),
        (["--name", "host1", "--listen", "10.88.0.11"], "labconfig.py agent: listen: "),
    ],
)
def test_labconfig_refuses_what_the_agent_would(
    tmp_path: Path, token_file: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "agent.yaml"
    proc = labconfig(
        "agent", *args, "--subnet", "10.77.1.0/24", "--token-file", str(token_file),
        "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith(message) and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert not out.exists()


# --- vagrant/register-hosts.sh against a real controller and agent ----------------

CONTROLLER_TOKEN = "lab-controller-token-" + "0123456789abcdef"


@pytest.fixture(scope="module")
def controller_url() -> Iterator[str]:
    with storage_root("vagrant-ctl") as root, served_controller(root, CONTROLLER_TOKEN) as ctl:
        yield ctl.url


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    with storage_root("vagrant-agent") as root:
        a = AgentProcess(root, name="host1")
        try:
            a.start()
            yield a
        finally:
            a.cleanup()


class ControllerVM:
    """The controller VM's file layout in a temporary directory: the rsync'd
    checkout is this repository, /opt/kvmss/venv is this venv, and /etc/kvmss
    and the upload directory are fresh."""

    def __init__(self, root: Path) -> None:
        self.etc = root / "etc"
        self.uploads = root / "uploads"
        prefix = root / "opt"
        prefix.mkdir()
        (prefix / "venv").symlink_to(Path(sys.prefix))
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("KVMSS_")},
            "KVMSS_SOURCE": str(REPO),
            "KVMSS_PREFIX": str(prefix),
            "KVMSS_ETC": str(self.etc),
        }
        self.etc.mkdir(mode=0o755)
        (self.etc / "controller.token").write_text(CONTROLLER_TOKEN + "\n")

    def upload(self, name: str, token: str) -> None:
        self.uploads.mkdir(exist_ok=True)
        path = self.uploads / f"{name}.token"
        path.write_text(token + "\n")
        path.chmod(0o600)

    def register(
        self, url: str, *hosts: str, timeout: int = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(REPO / "vagrant" / "register-hosts.sh"), url, str(self.uploads), *hosts],
            env={**self.env, "KVMSS_REGISTER_TIMEOUT": str(timeout)},
            capture_output=True,
            text=True,
            timeout=timeout + 60,
        )


def hosts_of(url: str) -> dict[str, dict[str, Any]]:
    auth = {"Authorization": f"Bearer {CONTROLLER_TOKEN}"}
    r = requests.get(f"{url}/v1/hosts", headers=auth, timeout=60)
    assert r.status_code == 200, r.text
    return {h["name"]: h for h in r.json()["value"]}


def test_register_hosts(controller_url: str, agent: AgentProcess, tmp_path: Path) -> None:
    vm = ControllerVM(tmp_path)
    vm.upload("host1", agent.token)
    agent_url = f"http://127.0.0.1:{agent.port}"
    first = vm.register(controller_url, f"host1={agent_url}")
    assert first.returncode == 0, first.stderr
    assert "host1: registered" in first.stderr
    host = hosts_of(controller_url)["host1"]
    assert (host["url"], host["reachable"]) == (agent_url, True)
    # The token moved out of the upload directory into /etc/kvmss/agents, root only.
    kept = vm.etc / "agents" / "host1.token"
    assert kept.read_text().strip() == agent.token
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE((vm.etc / "agents").stat().st_mode) == 0o700
    assert not vm.uploads.exists()
    assert agent.token not in first.stdout + first.stderr
    # Provisioning again (no new upload): nothing to do, nothing changes.
    again = vm.register(controller_url, f"host1={agent_url}")
    assert again.returncode == 0, again.stderr
    assert "host1: already registered" in again.stderr
    assert list(hosts_of(controller_url)) == ["host1"]


def test_register_hosts_names_an_agent_that_never_answers(
    controller_url: str, tmp_path: Path
) -> None:
    vm = ControllerVM(tmp_path)
    token = "lab-agent-token-" + os.urandom(8).hex()
    vm.upload("host9", token)
    dead = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc = vm.register(controller_url, f"host9={dead}", timeout=0)
    assert time.monotonic() - started < 30
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("register-hosts.sh: host9: not registered after 0s: ")
    assert "HostUnreachable" in lines[0]
    assert lines[-1] == (
        "register-hosts.sh: not registered: host9; once they are up: "
        "vagrant provision controller --provision-with register"
    )
    assert token not in proc.stdout + proc.stderr
    assert "host9" not in hosts_of(controller_url)


def test_register_hosts_without_a_token_fails(controller_url: str, tmp_path: Path) -> None:
    vm = ControllerVM(tmp_path)
    proc = vm.register(controller_url, "host3=http://127.0.0.1:9", timeout=0)
    assert proc.returncode == 1
    assert "no token: neither" in proc.stderr and "host3.token" in proc.stderr
