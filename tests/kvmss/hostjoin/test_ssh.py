"""``kvmss host add NAME --ssh`` and ``kvmss host remove NAME --ssh`` against
a real sshd in a network namespace (tests/deploy/sshhost.py) and a real controller:
the CLI installs kvmss into a temporary prefix, starts the agent inside the
namespace, waits for it and registers it; removing it stops the agent and
takes its configuration away. Host keys are checked: unknown or different
keys are refused before anything happens on the host.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest
import requests
import yaml
from click.testing import CliRunner, Result

from kvmss.cli.main import main
from kvmss.hostjoin.layout import HostLayout
from kvmss.hostjoin.session import fingerprint
from kvmss.hostjoin.unitfile import retarget
from tests.agentproc import REPO
from tests.deploy.sshhost import SSHD, SshHost, keygen, port_open, ssh_host
from tests.deploy.wheelhouse import wheelhouse
from tests.fixtures import storage_root
from tests.servedcontroller import served_controller

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path(SSHD).exists() or shutil.which("ip") is None,
    reason="needs root (network namespaces) and /usr/sbin/sshd",
)

TOKEN = "ssh-join-controller-token-4c1d9e"
HOST = "sshhost1"


@dataclass
class Env:
    host: SshHost
    root: Path
    url: str
    token_file: Path
    bridge: str
    subnet: str
    wheels: Path

    @property
    def layout(self) -> HostLayout:
        return HostLayout.of(
            str(self.root / "opt"), str(self.root / "etc"), str(self.root / "state")
        )

    def ssh_args(self) -> list[str]:
        layout = self.layout
        return [
            "--ssh", self.host.target, "--port", str(self.host.port),
            "--key", str(self.host.client_key),
            "--prefix", str(layout.prefix), "--config-dir", str(layout.config_dir),
            "--state-dir", str(layout.state_dir),
        ]  # fmt: skip

    def cli(self, *args: str) -> Result:
        base = ["--url", self.url, "--token-file", str(self.token_file)]
        return CliRunner().invoke(main, [*base, *args], catch_exceptions=False)

    def accepted_logins(self) -> int:
        return self.host.sshd_log.read_text().count("Accepted publickey")

    def installed_nothing(self) -> bool:
        return not any((self.root / d).exists() for d in ("opt", "etc", "state"))


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with (
        storage_root("ssh") as root,
        ssh_host(root) as host,
        served_controller(root / "ctl", TOKEN) as ctl,
    ):
        token_file = root / "controller.token"
        token_file.write_text(TOKEN + "\n")
        tag = host.netns.rsplit("-", 1)[1]
        # The bridge lives in the namespace; name and subnet are still unique.
        subnet = f"10.253.{int(tag[:2], 16)}.0/24"
        yield Env(host, root, ctl.url, token_file, f"kvb{tag}", subnet, wheelhouse())


def one_line_error(r: Result) -> str:
    assert r.exit_code == 1, (r.exit_code, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("kvmss: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[-1]


# --- host keys ----------------------------------------------------------------------


def test_fingerprint_is_openssh_s(env: Env) -> None:
    key_type, b64 = env.host.host_key_line.split()
    assert key_type == "ssh-ed25519"
    key = paramiko.Ed25519Key(data=base64.b64decode(b64))
    assert fingerprint(key) == env.host.fingerprint  # as printed by ssh-keygen -lf


def test_unknown_host_key_is_refused_and_nothing_installed(env: Env) -> None:
    before = env.accepted_logins()
    empty = env.root / "empty_known_hosts"
    empty.write_text("")
    r = env.cli("host", "add", HOST, *env.ssh_args(), "--known-hosts", str(empty))
    line = one_line_error(r)
    fp = env.host.fingerprint
    assert "unknown host key" in line
    assert f"ssh-ed25519 {fp}" in line  # what the server offered
    assert f"--host-key-fingerprint {fp}" in line  # how to accept it
    assert f"ssh-keyscan -p {env.host.port} {env.host.address}" in line
    assert env.accepted_logins() == before  # refused before logging in
    assert env.installed_nothing()


def test_missing_known_hosts_file_is_an_unknown_key(env: Env) -> None:
    r = env.cli("host", "add", HOST, *env.ssh_args(), "--known-hosts", str(env.root / "nope"))
    assert "unknown host key" in one_line_error(r)
    assert env.installed_nothing()


def test_different_key_in_known_hosts_is_refused(env: Env) -> None:
    before = env.accepted_logins()
    other = keygen(env.root / "other_host_key", "someone-else")
    known = env.host.known_hosts(env.root / "other_known_hosts", " ".join(other.split()[:2]))
    r = env.cli("host", "add", HOST, *env.ssh_args(), "--known-hosts", str(known))
    line = one_line_error(r)
    assert "host key mismatch" in line
    assert env.host.fingerprint in line
    other_fp = subprocess.run(
        ["ssh-keygen", "-lf", str(env.root / "other_host_key.pub")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    assert other_fp in line
    assert "ssh-keygen -R" in line
    assert env.accepted_logins() == before
    assert env.installed_nothing()


def test_wrong_fingerprint_is_refused(env: Env) -> None:
    before = env.accepted_logins()
    wrong = "SHA256:" + "A" * 43
    r = env.cli("host", "add", HOST, *env.ssh_args(), "--host-key-fingerprint", wrong)
    line = one_line_error(r)
    assert "host key mismatch" in line
    assert f"offered ssh-ed25519 {env.host.fingerprint}" in line
    assert env.accepted_logins() == before
    assert env.installed_nothing()


def test_malformed_fingerprint_and_ssh_only_options_are_usage_errors(env: Env) -> None:
    r = env.cli("host", "add", HOST, *env.ssh_args(), "--host-key-fingerprint", "MD5:aa:bb")
    assert r.exit_code == 2 and "SHA256:" in r.stderr
    r = env.cli("host", "remove", HOST, "--purge")
    assert r.exit_code == 2 and "--purge: needs --ssh" in r.stderr
    r = env.cli("host", "add", HOST, "--ssh", "root@10.0.0.1", "--url", "http://x:1")
    assert r.exit_code == 2 and "not both" in r.stderr
    assert env.installed_nothing()


# --- join, then remove --------------------------------------------------------------


def test_join_and_remove(env: Env) -> None:
    host, layout = env.host, env.layout
    known = host.known_hosts(env.root / "known_hosts")
    started = time.monotonic()
    r = env.cli(
        "host", "add", HOST, *env.ssh_args(), "--known-hosts", str(known),
        "--bridge-name", env.bridge, "--bridge-subnet", env.subnet,
        # The namespace has no route to PyPI.
        "--find-links", str(env.wheels),
    )  # fmt: skip
    took = time.monotonic() - started
    assert r.exit_code == 0, r.stderr
    print(f"host add --ssh took {took:.1f} s")
    assert "will not restart on reboot" in r.stderr  # no systemd in the namespace

    token_file = Path(str(layout.token_file))
    token = token_file.read_text().strip()
    assert len(token) >= 32 and token_file.stat().st_mode & 0o777 == 0o600
    assert token not in r.stdout + r.stderr
    cfg = yaml.safe_load(Path(str(layout.config_file)).read_text())
    assert cfg["listen"] == f"{host.address}:8090"
    assert cfg["bridge"] == {"name": env.bridge, "subnet": env.subnet}
    assert cfg["token_file"] == str(layout.token_file) and "token" not in cfg

    # The agent runs inside the namespace, with the bridge it was configured for.
    pid = int(Path(str(layout.pid_file)).read_text())
    assert pid in host.pids()
    assert env.bridge in host.exec("ip", "-o", "link", "show", env.bridge).stdout

    # The controller's view of the host is what the agent says of itself.
    agent_url = f"http://{host.address}:8090"
    own = requests.get(
        f"{agent_url}/v1/host", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ).json()
    listed = env.cli("host", "list", "-o", "json")
    assert listed.exit_code == 0, listed.stderr
    [view] = json.loads(listed.stdout)["value"]
    assert view["name"] == HOST and view["url"] == agent_url and view["reachable"] is True
    assert view["libvirtVersion"] == own["libvirtVersion"]
    assert view["hypervisor"] == own["hypervisor"]
    assert view["capacity"]["vcpus"] == own["capacity"]["vcpus"]
    [row] = [line.split() for line in env.cli("host", "list").stdout.splitlines() if HOST in line]
    assert row[:3] == [HOST, agent_url, own["hypervisor"]] and row[-1] == "yes"

    # The unit this layout gets points at the installed agent (systemd checks it).
    unit = REPO / "systemd" / "kvmss-agent.service"
    if unit.is_file() and shutil.which("systemd-analyze"):
        moved = env.root / "kvmss-agent.service"
        moved.write_text(retarget(unit.read_text(), layout.relocation()))
        assert str(layout.agent_bin) in moved.read_text()
        v = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(moved)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert v.returncode == 0, v.stderr

    # Remove, accepting the host key by its fingerprint this time.
    r = env.cli("host", "remove", HOST, *env.ssh_args(), "--host-key-fingerprint", host.fingerprint)
    assert r.exit_code == 0, r.stderr
    assert not port_open(host.address, 8090), r.stderr
    assert pid not in host.pids()
    assert not Path(str(layout.config_file)).exists()
    assert not token_file.exists()
    storage = Path(str(layout.storage_dir))
    assert storage.is_dir()  # disk data stays without --purge
    assert json.loads(env.cli("host", "list", "-o", "json").stdout)["value"] == []

    # --purge refuses while instances are left in the agent's storage.
    purge_args = [*env.ssh_args(), "--purge", "--host-key-fingerprint", host.fingerprint]
    (storage / "instances" / "web_0").mkdir(parents=True)
    r = env.cli("host", "remove", HOST, *purge_args)
    assert "still holds 1 instances (web_0)" in one_line_error(r)
    assert (storage / "instances" / "web_0").is_dir()
    (storage / "instances" / "web_0").rmdir()

    # Unregistered already: --purge still cleans the host.
    r = env.cli("host", "remove", HOST, *purge_args)
    assert r.exit_code == 0, r.stderr
    assert "not registered" in r.stderr
    assert not storage.exists()


def test_install_script_from_a_source_tree_again(env: Env) -> None:
    """The Vagrant path: a source tree, over an existing install (idempotent)."""
    prefix = env.root / "opt"
    if not (prefix / "venv" / "bin" / "kvmss-agent").exists():
        pytest.skip("needs the install of test_join_and_remove")
    started = time.monotonic()
    r = subprocess.run(
        [
            "bash",
            str(REPO / "scripts" / "install-kvmss.sh"),
            str(REPO),
            "--prefix",
            str(prefix),
            "--find-links",
            str(env.wheels),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    print(f"install-kvmss.sh again took {time.monotonic() - started:.1f} s")
    assert r.returncode == 0, r.stderr
    assert "installed in" in r.stderr
    out = subprocess.run(
        [str(prefix / "venv" / "bin" / "kvmss"), "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "version" in out.stdout
