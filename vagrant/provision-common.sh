# shellcheck shell=bash
# What the lab's provisioning scripts share (sourced, not run): where kvmss is installed,
# installing Debian packages, moving a token the file provisioner uploaded into /etc/kvmss,
# writing a daemon's configuration through vagrant/labconfig.py, and starting its unit.
#
# Paths can be moved for tests: KVMSS_SOURCE (the rsync'd checkout, /vagrant), KVMSS_PREFIX
# (what install-kvmss.sh installed, /opt/kvmss) and KVMSS_ETC (/etc/kvmss).

KVMSS_SOURCE=${KVMSS_SOURCE:-/vagrant}
KVMSS_PREFIX=${KVMSS_PREFIX:-/opt/kvmss}
KVMSS_ETC=${KVMSS_ETC:-/etc/kvmss}
KVMSS_PYTHON=$KVMSS_PREFIX/venv/bin/python
# shellcheck disable=SC2034 # used by the scripts that source this file
KVMSS_CLI=$KVMSS_PREFIX/venv/bin/kvmss
# Tokens, and anything else made here, are for root only.
umask 077

# Vagrant runs each script as /tmp/vagrant-shell: messages carry the name the script gives.
log() { printf '%s: %s\n' "${KVMSS_SCRIPT:-${0##*/}}" "$*" >&2; }
fail() {
  log "$*"
  exit 1
}

# apt_install PACKAGE...: installs the packages not installed yet (apt-get update first),
# under the usual umask: maintainer scripts must not make root-only files for the daemons.
apt_install() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  (
    umask 022
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  )
}

# install_token UPLOAD DEST: the token uploaded to UPLOAD becomes DEST (root, 0600) and UPLOAD
# is removed; without an upload DEST must already hold one (a later `vagrant provision`).
# Prints "changed" when DEST is new or different. Never prints the token.
install_token() {
  local upload=$1 dest=$2
  if [[ -f $upload ]]; then
    if [[ -f $dest ]] && cmp -s "$upload" "$dest"; then
      rm -f -- "$upload"
      echo unchanged
      return
    fi
    install -D -m 0600 -o root -g root -- "$upload" "$dest"
    rm -f -- "$upload"
    echo changed
  elif [[ -s $dest ]]; then
    echo unchanged
  else
    fail "no token: neither $upload (from the file provisioner) nor $dest exists"
  fi
}

# write_config KIND ARGS...: vagrant/labconfig.py KIND ARGS..., which prints changed/unchanged.
write_config() {
  [[ -x $KVMSS_PYTHON ]] || fail "$KVMSS_PYTHON is missing: did scripts/install-kvmss.sh run?"
  "$KVMSS_PYTHON" "$KVMSS_SOURCE/vagrant/labconfig.py" "$@"
}

# start_unit UNIT CHANGED: enables UNIT and starts it, or restarts it when CHANGED is 1 (its
# settings or token moved). The units are Type=notify: systemctl returns once it is serving.
start_unit() {
  local unit=$1 changed=$2 verb=start
  ((changed)) && verb=restart
  systemctl enable --quiet "$unit"
  if ! systemctl "$verb" "$unit"; then
    journalctl --unit "$unit" --lines 30 --no-pager >&2 || true
    fail "$unit did not start (its log is above)"
  fi
  log "$unit: running"
}
