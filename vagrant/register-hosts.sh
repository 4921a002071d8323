#!/usr/bin/env bash
# The lab's controller VM, last step (vagrant runs it as root):
#   register-hosts.sh CONTROLLER_URL UPLOADS NAME=AGENT_URL...
# registers each host agent with the controller (`kvmss host add`), using the agent token the
# file provisioner uploaded as UPLOADS/NAME.token, kept as /etc/kvmss/agents/NAME.token (0600).
# A host already registered is left as it is. An agent that does not answer yet (a parallel
# `vagrant up` may still be provisioning it) is retried every 5 s for KVMSS_REGISTER_TIMEOUT
# seconds (default 900); a host still missing then makes the script fail, naming it and the
# command that registers it later.
set -euo pipefail
KVMSS_SCRIPT=register-hosts.sh
# shellcheck source=SCRIPTDIR/provision-common.sh
source "${KVMSS_SOURCE:-/vagrant}/vagrant/provision-common.sh"

(($# >= 2)) || fail "usage: register-hosts.sh CONTROLLER_URL UPLOADS NAME=AGENT_URL..."
url=$1 uploads=$2
shift 2
timeout=${KVMSS_REGISTER_TIMEOUT:-900}
[[ $timeout =~ ^[0-9]+$ ]] || fail "KVMSS_REGISTER_TIMEOUT=$timeout: must be a number of seconds"
[[ -x $KVMSS_CLI ]] || fail "$KVMSS_CLI is missing: did scripts/install-kvmss.sh run?"

ctl() { "$KVMSS_CLI" --url "$url" --token-file "$KVMSS_ETC/controller.token" "$@"; }

listing=$(ctl -o json host list) || fail "cannot list the controller's hosts at $url"
registered=$("$KVMSS_PYTHON" -c '
import json, sys
for host in json.load(sys.stdin)["value"]:
    print(host["name"])
' <<<"$listing")

install -d -m 0700 "$KVMSS_ETC/agents"
missing=()
for pair in "$@"; do
  name=${pair%%=*}
  agent_url=${pair#*=}
  [[ $pair == *=* && -n $name && -n $agent_url ]] || fail "$pair: must be NAME=AGENT_URL"
  token="$KVMSS_ETC/agents/$name.token"
  install_token "$uploads/$name.token" "$token" >/dev/null
  if grep -qxF -- "$name" <<<"$registered"; then
    log "$name: already registered"
    continue
  fi
  deadline=$((SECONDS + timeout))
  until err=$(ctl host add "$name" --url "$agent_url" --agent-token-file "$token" 2>&1 >/dev/null); do
    if ((SECONDS >= deadline)); then
      log "$name: not registered after ${timeout}s: ${err:-kvmss host add failed}"
      missing+=("$name")
      continue 2
    fi
    sleep 5
  done
  log "$name: registered ($agent_url)"
done
rmdir --ignore-fail-on-non-empty -- "$uploads" 2>/dev/null || true

if ((${#missing[@]})); then
  fail "not registered: ${missing[*]}; once they are up: vagrant provision controller --provision-with register"
fi
