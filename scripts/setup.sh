#!/usr/bin/env bash
# Idempotent setup for `make test` and `make demo`: Debian packages, the venv
# (libvirt-python built against the system libvirt), libvirt daemons running,
# and /dev/kvm usable by libvirt's QEMU user where it exists.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
APT_PACKAGES=(
  qemu-system-x86 qemu-utils
  libvirt-daemon-system libvirt-clients libvirt-dev libxml2-utils pkg-config
  busybox-static linux-image-amd64 e2fsprogs cpio xorriso
  acl iproute2 python3-venv gcc curl wget shellcheck
  debootstrap cloud-init openssh-server systemd vagrant vagrant-libvirt nftables
  chromium chromium-driver
)

log() { printf 'setup: %s\n' "$*" >&2; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # Packages are installed, not started: without this, openssh-server's
  # postinst starts an sshd on port 22 of a machine without systemd.
  policy_rc=/usr/sbin/policy-rc.d
  made_policy=0
  if [[ ! -e $policy_rc ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy_rc"
    chmod +x "$policy_rc"
    made_policy=1
  fi
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  ((made_policy)) && rm -f "$policy_rc"
fi

stamp="$VENV/.kvmss-installed"
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  log "installing kvmss and its dependencies into $VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q -e '.[dev]'
  touch "$stamp"
fi

# /dev/kvm that libvirt-qemu cannot open makes libvirt re-probe QEMU on every
# call (see ENVIRONMENT.md); an ACL fixes it. Domains still pick qemu or kvm by
# the agent's own rule. Set before libvirtd starts and probes QEMU.
if [[ -e /dev/kvm ]] && id libvirt-qemu >/dev/null 2>&1; then
  if ! getfacl -p /dev/kvm 2>/dev/null | grep -q '^user:libvirt-qemu:rw'; then
    log "granting libvirt-qemu access to /dev/kvm"
    setfacl -m u:libvirt-qemu:rw /dev/kvm
  fi
fi

# libvirt daemons (no systemd on CI machines; on real hosts systemd runs them).
pgrep -x virtlogd >/dev/null || { log "starting virtlogd"; virtlogd -d; }
if ! pgrep -x libvirtd >/dev/null; then
  log "starting libvirtd"
  libvirtd -d
fi
for _ in $(seq 50); do
  virsh -c qemu:///system version >/dev/null 2>&1 && break
  sleep 0.2
done
