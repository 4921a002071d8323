#!/usr/bin/env bash
# The lab's controller VM, after scripts/install-kvmss.sh (vagrant runs it as root):
#   provision-controller.sh ADDRESS:PORT PUBLIC_URL TOKEN_UPLOAD
# installs qemu-img, moves the controller's token from TOKEN_UPLOAD to /etc/kvmss/controller.token (0600), writes
# /etc/kvmss/controller.yaml (listening on the lab network, agents download images from
# PUBLIC_URL), runs kvmss-controller, and sets root's login shells up for the kvmss CLI
# (`vagrant ssh controller -c 'sudo -i kvmss host list'`). Runs again safely.
set -euo pipefail
KVMSS_SCRIPT=provision-controller.sh
# shellcheck source=SCRIPTDIR/provision-common.sh
source "${KVMSS_SOURCE:-/vagrant}/vagrant/provision-common.sh"

(($# == 3)) || fail "usage: provision-controller.sh ADDRESS:PORT PUBLIC_URL TOKEN_UPLOAD"
listen=$1 public_url=$2 upload=$3

# Publishing an image runs `qemu-img check` on it.
apt_install qemu-utils
install -d -m 0755 "$KVMSS_ETC"
token_state=$(install_token "$upload" "$KVMSS_ETC/controller.token")
config_state=$(write_config controller --listen "$listen" --public-url "$public_url" \
  --token-file "$KVMSS_ETC/controller.token" --out "$KVMSS_ETC/controller.yaml")

changed=0
[[ $token_state == changed || $config_state == changed ]] && changed=1
start_unit kvmss-controller.service "$changed"

# The CLI for root's login shells: the URL and the token file (not the token) in the
# environment, and `kvmss` on the PATH.
[[ -e /usr/local/bin/kvmss ]] || ln -s "$KVMSS_CLI" /usr/local/bin/kvmss
profile=/etc/profile.d/kvmss.sh
printf 'export KVMSS_URL=%q\nexport KVMSS_TOKEN_FILE=%q\n' \
  "http://$listen" "$KVMSS_ETC/controller.token" >"$profile.tmp"
chmod 0644 "$profile.tmp"
mv -f -- "$profile.tmp" "$profile"
