#!/usr/bin/env bash
# A lab host VM, after scripts/install-kvmss.sh (vagrant runs it as root):
#   provision-host.sh NAME ADDRESS:PORT SUBNET TOKEN_UPLOAD
# installs libvirt, QEMU and qemu-img, moves the agent's token from TOKEN_UPLOAD to
# /etc/kvmss/agent.token (0600), writes /etc/kvmss/agent.yaml (the management API on the lab
# network's ADDRESS:PORT, never on the guests' bridge; guests on SUBNET) and runs
# kvmss-agent. Runs again safely: the agent restarts only when its token or settings changed.
set -euo pipefail
KVMSS_SCRIPT=provision-host.sh
# shellcheck source=SCRIPTDIR/provision-common.sh
source "${KVMSS_SOURCE:-/vagrant}/vagrant/provision-common.sh"

(($# == 4)) || fail "usage: provision-host.sh NAME ADDRESS:PORT SUBNET TOKEN_UPLOAD"
name=$1 listen=$2 subnet=$3 upload=$4

# qemu-img (kvmss/base/qemuimg.py) makes the OS disks; the build dependencies of the venv come
# with scripts/install-kvmss.sh.
apt_install libvirt-daemon-system qemu-system-x86 qemu-utils
systemctl enable --now --quiet libvirtd
if [[ -c /dev/kvm ]] && grep -qwE 'vmx|svm' /proc/cpuinfo; then
  log "nested virtualization: /dev/kvm is here, guests run under KVM"
else
  log "no usable KVM in this VM (nested virtualization off?): guests will run under TCG"
fi

install -d -m 0755 "$KVMSS_ETC"
token_state=$(install_token "$upload" "$KVMSS_ETC/agent.token")
rmdir --ignore-fail-on-non-empty -- "$(dirname -- "$upload")" 2>/dev/null || true
config_state=$(write_config agent --name "$name" --listen "$listen" --subnet "$subnet" \
  --token-file "$KVMSS_ETC/agent.token" --out "$KVMSS_ETC/agent.yaml")

changed=0
[[ $token_state == changed || $config_state == changed ]] && changed=1
start_unit kvmss-agent.service "$changed"
