"""Taking a joined host's agent away over SSH (``kvmss host remove NAME
--ssh``), after the controller has let the host go: stop and disable the
agent, remove its unit file and configuration. The software in the prefix
stays; the state directory (base images, disks, journals) stays unless
purged, and is never purged while instances are left in it.
"""

from __future__ import annotations

from kvmss.hostjoin.agentproc import q, stop_detached, systemd_runs
from kvmss.hostjoin.layout import AGENT_UNIT, HostLayout
from kvmss.hostjoin.session import SshSession
from kvmss.hostjoin.steps import JoinError, Say


def instances_left(ssh: SshSession, layout: HostLayout) -> list[str]:
    """Instance directories in the agent's storage (none when it has none)."""
    where = layout.storage_dir / "instances"
    r = ssh.run(
        ssh.privileged(f"if [ -d {q(where)} ]; then ls -A {q(where)}; fi"),
        what=f"listing {where}",
    )
    return sorted(r.stdout.split())


def check_purge(ssh: SshSession, layout: HostLayout) -> None:
    left = instances_left(ssh, layout)
    if left:
        where = layout.storage_dir / "instances"
        raise JoinError(
            f"--purge: {where} still holds {len(left)} instances ({', '.join(left[:3])}"
            f"{', ...' if len(left) > 3 else ''}): delete them first; nothing was changed"
        )


def leave(ssh: SshSession, layout: HostLayout, purge: bool, say: Say) -> None:
    """Stop the agent (systemd unit or detached process), then remove its
    unit, configuration and token, and with ``purge`` its state."""
    unit = layout.unit_file
    if systemd_runs(ssh):
        r = ssh.run(
            ssh.privileged(
                f"if [ -e {q(unit)} ]; then systemctl disable --now {AGENT_UNIT} && "
                f"rm -f {q(unit)} && systemctl daemon-reload && echo removed; fi"
            ),
            what=f"stopping {AGENT_UNIT}",
            timeout=120,
        )
        if "removed" in r.stdout:
            say(f"stopped and disabled {AGENT_UNIT}, removed {unit}")
    if stop_detached(ssh, layout):
        say(f"stopped the agent of {layout.pid_file}")
    ssh.run(
        ssh.privileged(
            f"rm -f {q(layout.config_file)} {q(layout.token_file)} && "
            f"{{ rmdir {q(layout.config_dir)} 2>/dev/null || true; }}"
        ),
        what="removing the agent's configuration",
    )
    say(f"removed {layout.config_file} and {layout.token_file}")
    if purge:
        ssh.run(
            ssh.privileged(
                f"rm -rf {q(layout.storage_dir)} {q(layout.log_file)} && "
                f"{{ rmdir {q(layout.state_dir)} 2>/dev/null || true; }}"
            ),
            what="purging the agent's state",
            timeout=600,
        )
        say(f"purged {layout.storage_dir}")
    else:
        say(f"kept {layout.state_dir} (images, disks; --purge removes them)")
