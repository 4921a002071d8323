#!/usr/bin/env bash
# Installs kvmss on a host: PREFIX/venv with kvmss from SOURCE (a wheel, or a
# source tree) and its dependencies from PyPI, and the systemd unit files from
# --units when systemd runs the host. Used by `kvmss host add --ssh` and by the
# Vagrant provisioning. Running it again reinstalls kvmss over what is there.
#
#   install-kvmss.sh SOURCE [--prefix /opt/kvmss] [--units DIR] [--find-links DIR]
#
# Dependencies come from PyPI, or with --find-links only from the wheels in DIR
# (a wheelhouse, for hosts without access to PyPI; pip uses no index then).
# libvirt-python has no wheel on PyPI: pip builds it, which needs libvirt-dev,
# pkg-config, gcc and the Python headers; they are installed with apt-get when
# missing. pip's own environment variables (PIP_INDEX_URL, ...) are honoured.
set -euo pipefail

PREFIX=/opt/kvmss
UNITS=""
SOURCE=""
PIP_ARGS=(-q)
# Packages apt-get installs when missing: what pip needs to build libvirt-python,
# and nftables (nft), which the agent needs to isolate its guests.
BUILD_DEPS=(python3-venv python3-dev libvirt-dev pkg-config gcc nftables)

log() { printf 'install-kvmss: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}
usage() {
  printf 'usage: install-kvmss.sh SOURCE [--prefix DIR] [--units DIR] [--find-links DIR]\n' >&2
  exit 2
}

while (($#)); do
  case $1 in
  --prefix | --units | --find-links)
    (($# >= 2)) || usage
    case $1 in
    --prefix) PREFIX=$2 ;;
    --units) UNITS=$2 ;;
    *)
      [[ -d $2 ]] || die "--find-links $2: not a directory"
      PIP_ARGS+=(--no-index --find-links "$2")
      ;;
    esac
    shift 2
    ;;
  -h | --help) usage ;;
  -*) die "unknown option $1" ;;
  *)
    [[ -z $SOURCE ]] || usage
    SOURCE=$1
    shift
    ;;
  esac
done
[[ -n $SOURCE ]] || usage
[[ $PREFIX == /* ]] || die "--prefix $PREFIX: must be an absolute path"
[[ -z $UNITS || -d $UNITS ]] || die "--units $UNITS: not a directory"
if [[ -f $SOURCE ]]; then
  [[ $SOURCE == *.whl ]] || die "$SOURCE: neither a wheel (*.whl) nor a source tree"
elif [[ -d $SOURCE ]]; then
  [[ -f $SOURCE/pyproject.toml ]] || die "$SOURCE: no pyproject.toml, not a kvmss source tree"
else
  die "$SOURCE: no such file or directory"
fi
[[ $(id -u) == 0 ]] || die "must run as root (it installs packages, $PREFIX and unit files)"

# --- build dependencies ----------------------------------------------------------
if command -v dpkg-query >/dev/null; then
  missing=()
  for p in "${BUILD_DEPS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  log "no dpkg: make sure the equivalents of ${BUILD_DEPS[*]} are installed"
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "kvmss needs Python 3.11 or newer; python3 is $(python3 -V 2>&1)"

# --- the wheel -------------------------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
VENV=$PREFIX/venv
mkdir -p "$PREFIX"
if [[ ! -x $VENV/bin/python ]]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
if [[ -d $SOURCE ]]; then
  # Build from a copy: pip builds in the tree it is given, and the source may
  # be read-only (a Vagrant shared folder) or hold a developer's venv.
  mkdir "$work/src"
  tar -C "$SOURCE" --exclude=.git --exclude=.venv --exclude=./build --exclude=dist \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.vagrant -cf - . |
    tar -C "$work/src" -xf -
  log "building a wheel from $SOURCE"
  "$VENV/bin/pip" wheel "${PIP_ARGS[@]}" --no-deps --wheel-dir "$work/wheel" "$work/src" >&2
  wheels=("$work"/wheel/kvmss-*.whl)
  WHEEL=${wheels[0]}
else
  WHEEL=$SOURCE
fi

# --- install ---------------------------------------------------------------------
log "installing $(basename "$WHEEL") and its dependencies into $VENV"
"$VENV/bin/pip" install "${PIP_ARGS[@]}" "$WHEEL" >&2
# The same version may be installed already (pip would keep it): replace it.
"$VENV/bin/pip" install "${PIP_ARGS[@]}" --no-deps --force-reinstall "$WHEEL" >&2
"$VENV/bin/kvmss-agent" --help >/dev/null || die "$VENV/bin/kvmss-agent does not run"

# --- unit files ------------------------------------------------------------------
if [[ -n $UNITS ]]; then
  units=()
  for u in "$UNITS"/*.service; do
    if [[ -f $u ]]; then units+=("$u"); fi
  done
  if ((${#units[@]} == 0)); then
    log "no *.service in $UNITS"
  elif [[ -d /run/systemd/system ]]; then
    for u in "${units[@]}"; do
      install -m 0644 "$u" /etc/systemd/system/
      log "installed /etc/systemd/system/$(basename "$u")"
    done
    systemctl daemon-reload
  else
    log "systemd is not running here: unit files not installed"
  fi
fi
log "kvmss $("$VENV/bin/pip" show kvmss 2>/dev/null | sed -n 's/^Version: //p') installed in $VENV"
