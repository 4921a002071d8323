# ---- kvmss guest library (hostagent/guest/guest_lib.sh) ---------------------------
# Shared by the extension script and the application-health loop. POSIX sh:
# runs under busybox ash and dash. Needs base64; talks HTTP with wget
# (busybox or GNU), else curl, else python3.
#
# The generated header sets, each as base64 inside single quotes:
#   KVMSS_REPORT_URL_B64  http://<agent>:<port>/v1/guest/instances/<name>
#   KVMSS_TOKEN_B64       bearer token for the agent's guest listener
#   KVMSS_ID_JSON_B64     the instance-id as a JSON string (quotes included)
# The token is never printed and never exported to child processes.

kvmss_b64d() {
    printf '%s' "$1" | base64 -d
}

kvmss_have() {
    command -v "$1" >/dev/null 2>&1
}

# kvmss_with_timeout SECONDS COMMAND...: busybox wget's own -T is not built
# into Debian's busybox before 1.36.1-5 (the option segfaults), so time limits
# come from timeout(1) where there is one.
kvmss_with_timeout() {
    _kt_seconds=$1
    shift
    if kvmss_have timeout; then
        timeout "$_kt_seconds" "$@"
    else
        "$@"
    fi
}

# Which wget: GNU wget retries and waits by default, busybox wget does not.
kvmss_wget_is_gnu() {
    wget --version 2>/dev/null | grep -q 'GNU Wget'
}

KVMSS_PY_POST='
import sys, urllib.request
token = sys.stdin.read()
with open(sys.argv[2], "rb") as f:
    body = f.read()
req = urllib.request.Request(sys.argv[1], data=body, method="POST", headers={
    "Authorization": "Bearer " + token, "Content-Type": "application/json"})
urllib.request.urlopen(req, timeout=15).close()
'

# kvmss_post URL FILE: POST the JSON in FILE with the bearer token; status 0
# when the agent answered 2xx. wget can only take the token on its command
# line; curl reads it from a config on stdin and python3 from stdin.
kvmss_post() {
    if kvmss_have wget; then
        _kp_gnu=
        if kvmss_wget_is_gnu; then
            _kp_gnu=1
        fi
        kvmss_with_timeout 20 wget -q -O /dev/null ${_kp_gnu:+--tries=1} ${_kp_gnu:+--timeout=15} \
            --header "Authorization: Bearer $KVMSS_TOKEN" \
            --header 'Content-Type: application/json' \
            --post-file "$2" "$1"
    elif kvmss_have curl; then
        printf 'header = "Authorization: Bearer %s"\n' "$KVMSS_TOKEN" |
            curl -fsS -o /dev/null --max-time 15 -K - \
                -H 'Content-Type: application/json' --data-binary "@$2" "$1"
    elif kvmss_have python3; then
        printf '%s' "$KVMSS_TOKEN" | python3 -c "$KVMSS_PY_POST" "$1" "$2"
    else
        return 127
    fi
} </dev/null >/dev/null 2>&1

# kvmss_report PATH FILE ATTEMPTS: POST FILE to <report url>/PATH, trying up to
# ATTEMPTS times KVMSS_REPORT_DELAY seconds apart (the network may come up
# late). Status 0 once delivered.
kvmss_report() {
    _kr_try=1
    while :; do
        if kvmss_post "$KVMSS_REPORT_URL/$1" "$2"; then
            return 0
        fi
        if [ "$_kr_try" -ge "$3" ]; then
            return 1
        fi
        _kr_try=$((_kr_try + 1))
        sleep "$KVMSS_REPORT_DELAY"
    done
}

# Values from the header. unset first: an assignment to a variable that came
# exported from the environment would export it to every child.
unset KVMSS_TOKEN KVMSS_REPORT_URL KVMSS_ID_JSON
KVMSS_REPORT_URL=$(kvmss_b64d "$KVMSS_REPORT_URL_B64")
KVMSS_TOKEN=$(kvmss_b64d "$KVMSS_TOKEN_B64")
KVMSS_ID_JSON=$(kvmss_b64d "$KVMSS_ID_JSON_B64")
KVMSS_REPORT_ATTEMPTS=${KVMSS_REPORT_ATTEMPTS:-10}
KVMSS_REPORT_DELAY=${KVMSS_REPORT_DELAY:-3}
