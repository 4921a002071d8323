# ---- kvmss extension runner (hostagent/guest/guest_extensions.sh) -----------------
# The generated header also sets, as base64 inside single quotes:
#   KVMSS_INSTANCE_B64, KVMSS_INSTANCE_ID_B64, KVMSS_CUSTOM_DATA_B64
# and KVMSS_HAS_CUSTOM_DATA (0 or 1). After this file come one
# kvmss_extension call per extension, in provisioning order, and kvmss_finish.
#
# Layout under KVMSS_STATE_DIR (default /var/lib/kvmss, all mode 0700/0600):
#   custom-data                 the decoded customData
#   extensions/<name>/          working directory of extension <name>
#   extensions/status           "<name> <status> <exit code|null>" per extension
#   logs/<name>.log             combined stdout+stderr of extension <name>
#   boot.d/health-<name>        starts an application-health loop at boot
# Extension output goes to its log, never to the console.

umask 077
KVMSS_STATE_DIR=${KVMSS_STATE_DIR:-/var/lib/kvmss}
KVMSS_CLOUD_DIR=${KVMSS_CLOUD_DIR:-/var/lib/cloud}
KVMSS_EXT_ROOT=$KVMSS_STATE_DIR/extensions
KVMSS_LOG_DIR=$KVMSS_STATE_DIR/logs
KVMSS_TMP=$KVMSS_STATE_DIR/tmp
unset KVMSS_INSTANCE KVMSS_INSTANCE_ID KVMSS_EXTENSION
KVMSS_INSTANCE=$(kvmss_b64d "$KVMSS_INSTANCE_B64")
KVMSS_INSTANCE_ID=$(kvmss_b64d "$KVMSS_INSTANCE_ID_B64")

kvmss_say() {
    printf 'kvmss: %s\n' "$*"
}

# kvmss_send NAME STATUS EXITCODE LOGFILE: report to the agent, with the last
# 4096 bytes of LOGFILE as outputBase64.
kvmss_send() {
    _ks_out=
    if [ -s "$4" ]; then
        _ks_out=$(tail -c 4096 "$4" | base64 | tr -d '\n')
    fi
    printf '{"instanceId": %s, "status": "%s", "exitCode": %s, "outputBase64": "%s"}\n' \
        "$KVMSS_ID_JSON" "$2" "$3" "$_ks_out" >"$KVMSS_TMP/report.json"
    if ! kvmss_report "extensions/$1" "$KVMSS_TMP/report.json" "$KVMSS_REPORT_ATTEMPTS"; then
        kvmss_say "extension $1: could not report $2 to the host agent"
    fi
}

# kvmss_done INDEX NAME STATUS EXITCODE
kvmss_done() {
    eval "KVMSS_STATUS_$1=\$3"
    printf '%s %s %s\n' "$2" "$3" "$4" >>"$KVMSS_TMP/status"
    if [ "$4" = null ]; then
        kvmss_say "extension $2: $3 (not run)"
    else
        kvmss_say "extension $2: $3 (exit code $4)"
    fi
    kvmss_send "$2" "$3" "$4" "$KVMSS_LOG_DIR/$2.log"
}

# kvmss_spawn DIR NAME COMMAND...: run COMMAND in DIR with the extension's
# environment; only KVMSS_INSTANCE, KVMSS_INSTANCE_ID and KVMSS_EXTENSION
# are added to what the script itself inherited.
kvmss_spawn() {
    (
        cd "$1" || exit 1
        umask 022
        KVMSS_EXTENSION=$2
        export KVMSS_INSTANCE KVMSS_INSTANCE_ID KVMSS_EXTENSION
        shift 2
        exec "$@"
    ) </dev/null
}

# kvmss_boot_hook NAME SCRIPT: make SCRIPT start again at every boot
# (boot.d for images whose init runs it, cloud-init's per-boot scripts).
kvmss_boot_hook() {
    case $2 in
    *\'*)
        kvmss_say "extension $1: path has a quote, no boot hook"
        return 0
        ;;
    esac
    mkdir -p "$KVMSS_STATE_DIR/boot.d" || return 0
    _kb_hook=$KVMSS_STATE_DIR/boot.d/health-$1
    printf "#!/bin/sh\nexec sh '%s' start\n" "$2" >"$_kb_hook" && chmod 700 "$_kb_hook"
    if [ -d "$KVMSS_CLOUD_DIR" ] && mkdir -p "$KVMSS_CLOUD_DIR/scripts/per-boot"; then
        cp "$_kb_hook" "$KVMSS_CLOUD_DIR/scripts/per-boot/kvmss-health-$1"
    fi
}

# kvmss_health DIR NAME PAYLOAD: install the health loop script and start it.
kvmss_health() {
    kvmss_b64d "$3" >"$1/health.sh" || return 1
    chmod 700 "$1/health.sh"
    kvmss_boot_hook "$2" "$1/health.sh"
    sh "$1/health.sh" start
}

# kvmss_extension INDEX NAME_B64 KIND PAYLOAD_B64 DEPENDENCY_INDEXES
#   KIND command: PAYLOAD is a command for sh -c; script: a script file;
#   health: the application-health loop script.
kvmss_extension() {
    _ke_idx=$1
    _ke_name=$(kvmss_b64d "$2")
    _ke_dir=$KVMSS_EXT_ROOT/$_ke_name
    _ke_log=$KVMSS_LOG_DIR/$_ke_name.log
    eval "KVMSS_NAME_$_ke_idx=\$_ke_name"
    mkdir -p "$_ke_dir"
    : >"$_ke_log"
    _ke_dep_status=
    _ke_dep_name=
    for _ke_dep in $5; do
        eval "_ke_dep_status=\${KVMSS_STATUS_$_ke_dep:-}"
        if [ "$_ke_dep_status" != Succeeded ]; then
            eval "_ke_dep_name=\$KVMSS_NAME_$_ke_dep"
            printf "skipped: dependency '%s' did not succeed" "$_ke_dep_name" >"$_ke_log"
            kvmss_done "$_ke_idx" "$_ke_name" Failed null
            return 0
        fi
    done
    kvmss_send "$_ke_name" Transitioning null /dev/null
    case $3 in
    command)
        _ke_cmd=$(kvmss_b64d "$4")
        kvmss_spawn "$_ke_dir" "$_ke_name" sh -c "$_ke_cmd" >"$_ke_log" 2>&1
        ;;
    script)
        kvmss_b64d "$4" >"$_ke_dir/script.sh" &&
            kvmss_spawn "$_ke_dir" "$_ke_name" sh ./script.sh >"$_ke_log" 2>&1
        ;;
    health)
        kvmss_health "$_ke_dir" "$_ke_name" "$4" </dev/null >"$_ke_log" 2>&1
        ;;
    *)
        printf 'unknown extension kind %s' "$3" >"$_ke_log"
        false
        ;;
    esac
    _ke_rc=$?
    if [ "$_ke_rc" -eq 0 ]; then
        kvmss_done "$_ke_idx" "$_ke_name" Succeeded 0
    else
        kvmss_done "$_ke_idx" "$_ke_name" Failed "$_ke_rc"
    fi
}

kvmss_finish() {
    if mv -f "$KVMSS_TMP/status" "$KVMSS_EXT_ROOT/status"; then
        kvmss_say "extensions done, status in $KVMSS_EXT_ROOT/status"
    fi
    rm -f "$KVMSS_TMP/report.json"
    exit 0
}

if ! mkdir -p "$KVMSS_EXT_ROOT" "$KVMSS_LOG_DIR" "$KVMSS_TMP"; then
    kvmss_say "cannot create $KVMSS_STATE_DIR"
fi
: >"$KVMSS_TMP/status"
kvmss_say "instance $KVMSS_INSTANCE ($KVMSS_INSTANCE_ID): running extensions"

if [ "$KVMSS_HAS_CUSTOM_DATA" = 1 ]; then
    if kvmss_b64d "$KVMSS_CUSTOM_DATA_B64" >"$KVMSS_TMP/custom-data" &&
        mv -f "$KVMSS_TMP/custom-data" "$KVMSS_STATE_DIR/custom-data"; then
        kvmss_say "custom data written to $KVMSS_STATE_DIR/custom-data"
    else
        kvmss_say "could not write $KVMSS_STATE_DIR/custom-data"
    fi
fi
