# ---- kvmss application health loop (hostagent/guest/guest_health.sh) --------------
# The generated header also sets KVMSS_HEALTH_PROTOCOL (http, https or tcp),
# KVMSS_HEALTH_PORT, KVMSS_HEALTH_INTERVAL (seconds) and KVMSS_HEALTH_PATH_B64.
#
#   sh health.sh start   start the loop, detached, unless it already runs
#   sh health.sh loop    the loop: probe 127.0.0.1, POST the state to
#                        <report url>/health, sleep, again; it stops when
#                        health.pid next to this file is gone or names
#                        another process.

umask 077
KVMSS_HEALTH_PATH=$(kvmss_b64d "$KVMSS_HEALTH_PATH_B64")
case $0 in
*/*) KVMSS_HEALTH_DIR=${0%/*} ;;
*) KVMSS_HEALTH_DIR=. ;;
esac
KVMSS_HEALTH_DIR=$(cd "$KVMSS_HEALTH_DIR" && pwd) || exit 1
KVMSS_HEALTH_SCRIPT=$KVMSS_HEALTH_DIR/${0##*/}
KVMSS_HEALTH_PID=$KVMSS_HEALTH_DIR/health.pid

KVMSS_PY_PROBE='
import socket, ssl, sys, urllib.request
if sys.argv[1] == "tcp":
    socket.create_connection(("127.0.0.1", int(sys.argv[2])), timeout=3).close()
else:
    ctx = ssl._create_unverified_context()
    urllib.request.urlopen(sys.argv[2], timeout=3, context=ctx).close()
'

# kvmss_probe: status 0 when the application answers (HTTP 2xx, or a TCP
# connection is accepted).
kvmss_probe() {
    case $KVMSS_HEALTH_PROTOCOL in
    http | https)
        _kp_url=$KVMSS_HEALTH_PROTOCOL://127.0.0.1:$KVMSS_HEALTH_PORT$KVMSS_HEALTH_PATH
        if kvmss_have wget; then
            _kp_gnu=
            if kvmss_wget_is_gnu; then
                _kp_gnu=1
            fi
            kvmss_with_timeout 3 wget -q -O /dev/null ${_kp_gnu:+--tries=1} \
                ${_kp_gnu:+--timeout=3} --no-check-certificate "$_kp_url"
        elif kvmss_have curl; then
            curl -fsS -k -o /dev/null --max-time 3 "$_kp_url"
        elif kvmss_have python3; then
            python3 -c "$KVMSS_PY_PROBE" "$KVMSS_HEALTH_PROTOCOL" "$_kp_url"
        else
            return 1
        fi
        ;;
    tcp)
        if kvmss_have nc; then
            # busybox nc has no -z: connect, run true, close.
            if nc --help 2>&1 | grep -q BusyBox; then
                kvmss_with_timeout 3 nc -w 3 127.0.0.1 "$KVMSS_HEALTH_PORT" -e true
            else
                kvmss_with_timeout 3 nc -z -w 3 127.0.0.1 "$KVMSS_HEALTH_PORT"
            fi
        elif kvmss_have python3; then
            python3 -c "$KVMSS_PY_PROBE" tcp "$KVMSS_HEALTH_PORT"
        else
            return 1
        fi
        ;;
    *)
        return 1
        ;;
    esac
} </dev/null >/dev/null 2>&1

# kvmss_health_running: status 0 when health.pid names a live loop of this script.
kvmss_health_running() {
    read -r _hr_pid 2>/dev/null <"$KVMSS_HEALTH_PID" || return 1
    case $_hr_pid in
    '' | *[!0-9]*) return 1 ;;
    esac
    [ -r "/proc/$_hr_pid/cmdline" ] || return 1
    _hr_cmd=$(tr '\000' ' ' <"/proc/$_hr_pid/cmdline")
    case $_hr_cmd in
    *"$KVMSS_HEALTH_SCRIPT loop"*) return 0 ;;
    esac
    return 1
}

kvmss_health_loop() {
    printf '%s\n' "$$" >"$KVMSS_HEALTH_PID" || exit 1
    while :; do
        read -r _hl_pid 2>/dev/null <"$KVMSS_HEALTH_PID" || exit 0
        [ "$_hl_pid" = "$$" ] || exit 0
        if kvmss_probe; then
            _hl_state=Healthy
        else
            _hl_state=Unhealthy
        fi
        printf '{"instanceId": %s, "state": "%s"}\n' "$KVMSS_ID_JSON" "$_hl_state" \
            >"$KVMSS_HEALTH_DIR/health.json"
        kvmss_report health "$KVMSS_HEALTH_DIR/health.json" 1
        sleep "$KVMSS_HEALTH_INTERVAL"
    done
}

case ${1:-start} in
start)
    if kvmss_health_running; then
        printf 'kvmss: application health loop already running\n'
        exit 0
    fi
    # Detached: own session, no inherited descriptors, so it outlives the
    # script and whoever waits for the script's output.
    if kvmss_have setsid; then
        setsid sh "$KVMSS_HEALTH_SCRIPT" loop </dev/null >/dev/null 2>&1 &
    else
        sh "$KVMSS_HEALTH_SCRIPT" loop </dev/null >/dev/null 2>&1 &
    fi
    _hs_try=0
    while [ "$_hs_try" -lt 50 ]; do
        if kvmss_health_running; then
            printf 'kvmss: application health loop started: %s probe of port %s every %ss\n' \
                "$KVMSS_HEALTH_PROTOCOL" "$KVMSS_HEALTH_PORT" "$KVMSS_HEALTH_INTERVAL"
            exit 0
        fi
        _hs_try=$((_hs_try + 1))
        sleep 0.1
    done
    printf 'kvmss: application health loop did not start\n'
    exit 1
    ;;
loop)
    kvmss_health_loop
    ;;
*)
    printf 'usage: sh %s start|loop\n' "$0" >&2
    exit 2
    ;;
esac
