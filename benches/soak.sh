#!/usr/bin/env bash
# Soak test: runs the release proxy under mixed load for a long time and checks that its
# memory and open file descriptors stay flat and that no request that should succeed fails.
#
# Everything runs on 127.0.0.1. An nginx server plays the FE: it serves the health
# check, the FE's "File not found" envelope for the fallback fetch, and a short fixed body on
# every other path. The proxy serves a local store of SOAK_IDS files of 1 to 16 KiB, all
# cached before the load starts. One wrk process per request kind runs for SOAK_DURATION
# seconds:
#   hit        good token, cached ids (every 8th request with `Connection: close`)
#   miss       good token, random unknown ids: store miss, then FE fallback, "not found"
#   proxied    GET and POST to paths the proxy forwards (every 5th with `Connection: close`)
#   bad_token  cached ids with wrong or malformed tokens
#   bad_input  missing parameters, empty or invalid ids, malformed percent-encoding
# Every SOAK_SAMPLE_SECONDS the script samples the proxy's VmRSS and its open fds (the
# smallest of 3 counts of /proc/<pid>/fd taken 100 ms apart, so a connection that is being
# opened or closed does not count) into a CSV.
#
# PASS when RSS and fds grew less than 10 % from the first sample at SOAK_BASELINE_SECONDS
# to the last one, every kind got only its expected answer (good-token hits a file of the
# right length, proxied requests the upstream's 200, the others the FE error they should
# get) with no socket error, and the proxy's outcome counters match the requests each kind
# sent (see benches/soak/check.py). Prints PASS or FAIL; exits 1 on FAIL.
#
# Settings (environment variables):
#   SOAK_DURATION          seconds of load (default 600, 60 to 86400)
#   SOAK_BASELINE_SECONDS  sample that RSS and fds are compared from (default 60)
#   SOAK_SAMPLE_SECONDS    seconds between samples (default 10, 1 to 600)
#   SOAK_CONNECTIONS       wrk connections per kind (default 4, 1 to 200)
#   SOAK_IDS               files in the store (default 32, 1 to 10000)
#   SOAK_KINDS             comma-separated request kinds to run (default all five), for
#                          finding out which kind makes the memory grow
#   SOAK_FE_TIMEOUT_MS     fe.read_timeout_ms and fe.write_timeout_ms of the proxy (default
#                          30000; `default` keeps the proxy's own 600000). Pingora keeps one
#                          timer entry per 10 ms slot for as long as a timeout lasts, so RSS
#                          grows for the length of the longest timeout before it levels off;
#                          with 600 s that is the whole of a 10-minute run.
#   SOAK_ACCESS_LOG        1 turns the proxy's access log on (default 0: one line per
#                          request fills gigabytes in a long run)
#   SOAK_BIN               a proxy binary to run instead of building the release one
#   SOAK_KEEP              1 keeps the temporary folder with logs, CSV and configs (it is
#                          always kept on FAIL)
#
# Needs cargo, nginx, wrk, python3 and curl (apt-get install nginx-light wrk curl python3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SOAK_DIR="$ROOT/benches/soak"
TOKEN="5f0c8a54-2d7e-4c1b-9a3e-b7d9e1f24c60"
FIRST_ID=1000
ALL_KINDS="hit,miss,proxied,bad_token,bad_input"
# wrk runs this much longer than SOAK_DURATION, so the last sample is taken under full load
# and not while the connections close.
LOAD_TAIL_SECONDS=5

DURATION=${SOAK_DURATION:-600}
BASELINE=${SOAK_BASELINE_SECONDS:-60}
SAMPLE_SECONDS=${SOAK_SAMPLE_SECONDS:-10}
CONNECTIONS=${SOAK_CONNECTIONS:-4}
IDS=${SOAK_IDS:-32}
KINDS_TEXT=${SOAK_KINDS:-$ALL_KINDS}
ACCESS_LOG=${SOAK_ACCESS_LOG:-0}
FE_TIMEOUT_MS=${SOAK_FE_TIMEOUT_MS:-30000}
KEEP=${SOAK_KEEP:-0}

die() {
    echo "soak.sh: error: $*" >&2
    exit 2
}

log() {
    echo "soak.sh: $(date -u +%H:%M:%S) $*" >&2
}

# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

check_range SOAK_DURATION "$DURATION" 60 86400
check_range SOAK_BASELINE_SECONDS "$BASELINE" 0 $((DURATION - 1))
check_range SOAK_SAMPLE_SECONDS "$SAMPLE_SECONDS" 1 600
check_range SOAK_CONNECTIONS "$CONNECTIONS" 1 200
check_range SOAK_IDS "$IDS" 1 10000
[[ $ACCESS_LOG == 0 || $ACCESS_LOG == 1 ]] || die "SOAK_ACCESS_LOG=$ACCESS_LOG must be 0 or 1"
if [[ $FE_TIMEOUT_MS != default ]]; then
    check_range SOAK_FE_TIMEOUT_MS "$FE_TIMEOUT_MS" 1000 600000
fi
[[ $KEEP == 0 || $KEEP == 1 ]] || die "SOAK_KEEP=$KEEP must be 0 or 1"
IFS=, read -r -a KINDS <<<"$KINDS_TEXT"
((${#KINDS[@]} > 0)) || die "SOAK_KINDS is empty; use a subset of $ALL_KINDS"
for kind in "${KINDS[@]}"; do
    [[ ",$ALL_KINDS," == *",$kind,"* ]] || die "SOAK_KINDS has an unknown kind '$kind'; use a subset of $ALL_KINDS"
done

for tool in nginx wrk python3 curl cargo; do
    command -v "$tool" >/dev/null ||
        die "$tool is not installed; run: apt-get install nginx-light wrk curl python3 (cargo: rustup)"
done

# --- Processes and clean-up -----------------------------------------------------------------

TMP=$(mktemp -d /tmp/doris-fe-proxy-soak.XXXXXX)
# nginx workers run as `nobody` when the master runs as root.
chmod 755 "$TMP"
NGINX_PID=""
PROXY_PID=""
WRK_PIDS=()
RESULT=2

cleanup() {
    for pid in "${WRK_PIDS[@]}"; do
        stop_pid "$pid" TERM
    done
    [[ -z $PROXY_PID ]] || stop_pid "$PROXY_PID" INT
    [[ -z $NGINX_PID ]] || stop_pid "$NGINX_PID" TERM
    if [[ $RESULT -ne 0 || $KEEP == 1 ]]; then
        log "logs, samples and configs are kept in $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Build and store --------------------------------------------------------------------------

if [[ -n ${SOAK_BIN:-} ]]; then
    BIN=$SOAK_BIN
    [[ -x $BIN ]] || die "SOAK_BIN=$BIN is not an executable file"
else
    log "building the release binary (cargo build --release)"
    (cd "$ROOT" && cargo build --release) || die "cargo build --release failed"
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/doris-fe-proxy"
    [[ -x $BIN ]] || die "the release binary $BIN is missing after the build"
fi

STORE="$TMP/store"
for i in $(seq 0 $((IDS - 1))); do
    size=$((1024 + (i * 15 * 1024) / (IDS > 1 ? IDS - 1 : 1)))
    mkdir -p "$STORE/$((FIRST_ID + i))"
    head -c "$size" /dev/urandom >"$STORE/$((FIRST_ID + i))/soak-$size.bin"
done

# --- nginx as the FE --------------------------------------------------------------------------

mapfile -t ports < <(python3 "$ROOT/benches/loadtool.py" ports 3)
UPSTREAM_PORT=${ports[0]}
PROXY_PORT=${ports[1]}
METRICS_PORT=${ports[2]}
NGINX_DIR="$TMP/nginx"
mkdir -p "$NGINX_DIR/temp"
HEALTH_BODY='{"msg":"success","code":0,"data":{"online_backend_num":1,"total_backend_num":1},"count":0}'
NOT_FOUND_BODY='{"msg":"Error","code":1,"data":"File not found or is not content","count":0}'
cat >"$NGINX_DIR/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $NGINX_DIR/temp/body;
    proxy_temp_path $NGINX_DIR/temp/proxy;
    fastcgi_temp_path $NGINX_DIR/temp/fastcgi;
    uwsgi_temp_path $NGINX_DIR/temp/uwsgi;
    scgi_temp_path $NGINX_DIR/temp/scgi;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;
        # Marks every upstream response, so the load can tell it from the proxy's own.
        add_header X-Soak-Upstream nginx always;
        default_type application/json;
        location = /api/health {
            return 200 '$HEALTH_BODY';
        }
        # The FE's response to the proxy's fallback fetch of an id it does not have.
        location = /api/get_small_file {
            return 200 '$NOT_FOUND_BODY';
        }
        location / {
            default_type text/plain;
            return 200 "soak upstream answer";
        }
    }
}
EOF
nginx -t -q -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" -e "$NGINX_DIR/error.log" ||
    die "nginx rejects the generated config $NGINX_DIR/nginx.conf"
nginx -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" -e "$NGINX_DIR/error.log" \
    >"$NGINX_DIR/stdout.log" 2>&1 &
NGINX_PID=$!
wait_for_url "http://127.0.0.1:$UPSTREAM_PORT/api/health" "$NGINX_PID" ||
    die "nginx did not start; its log: $(tail -n 20 "$NGINX_DIR/error.log" 2>/dev/null)"
log "nginx pid $NGINX_PID on 127.0.0.1:$UPSTREAM_PORT"

# --- The proxy --------------------------------------------------------------------------------

CONF="$TMP/proxy.yaml"
PROXY_LOG="$TMP/proxy.log"
ACCESS_LOG_YAML=$([[ $ACCESS_LOG == 1 ]] && echo true || echo false)
FE_TIMEOUT_YAML=""
if [[ $FE_TIMEOUT_MS != default ]]; then
    FE_TIMEOUT_YAML="  read_timeout_ms: $FE_TIMEOUT_MS
  write_timeout_ms: $FE_TIMEOUT_MS"
fi
cat >"$CONF" <<EOF
server:
  threads: 2
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1
  pid_file: $TMP/proxy.pid
  upgrade_sock: $TMP/upgrade.sock
listen: 127.0.0.1:$PROXY_PORT
access_log: $ACCESS_LOG_YAML
fe:
  backends: ["127.0.0.1:$UPSTREAM_PORT"]
  health_check: { path: /api/health, interval_ms: 1000, timeout_ms: 1000 }
$FE_TIMEOUT_YAML
small_file:
  token: { value: "$TOKEN" }
  store: file://$STORE
  cache: { max_bytes: 67108864, ttl_seconds: 86400, negative_ttl_seconds: 5, negative_max_entries: 10000 }
  fallback_to_fe: true
metrics:
  listen: 127.0.0.1:$METRICS_PORT
EOF
"$BIN" -c "$CONF" >"$PROXY_LOG" 2>&1 &
PROXY_PID=$!
if ! wait_for_url "http://127.0.0.1:$METRICS_PORT/metrics" "$PROXY_PID" ||
    ! wait_for_url "http://127.0.0.1:$PROXY_PORT/soak/ready" "$PROXY_PID"; then
    die "the proxy did not start; its log:"$'\n'"$(tail -n 20 "$PROXY_LOG")"
fi
log "proxy pid $PROXY_PID on 127.0.0.1:$PROXY_PORT, metrics on 127.0.0.1:$METRICS_PORT"

# Load every file into the cache, so that the hits are hits from the first request on.
for i in $(seq 0 $((IDS - 1))); do
    curl -fsS --max-time 5 -o /dev/null \
        "http://127.0.0.1:$PROXY_PORT/api/get_small_file?token=$TOKEN&file_id=$((FIRST_ID + i))" ||
        die "cannot load file id $((FIRST_ID + i)) through the proxy"
done

metrics_to() {
    curl -fsS --max-time 5 -o "$1" "http://127.0.0.1:$METRICS_PORT/metrics"
}

# Prints the sum of every sample of metric family $1 in the metrics file $2.
metric_total() {
    awk -v name="$1" 'index($0, name "{") == 1 || $1 == name { sum += $NF } END { printf "%d\n", sum }' "$2"
}

# Prints the proxy's open fds: the smallest of 3 counts taken 100 ms apart.
open_fds() {
    local smallest="" count
    for _ in 1 2 3; do
        count=$(find "/proc/$PROXY_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        if [[ -z $smallest ]] || ((count < smallest)); then
            smallest=$count
        fi
        sleep 0.1
    done
    echo "$smallest"
}

SAMPLES="$TMP/samples.csv"
echo "elapsed_s,rss_kib,rss_anon_kib,fds,small_file_requests,proxied_requests" >"$SAMPLES"

# Appends one sample line for $1 seconds since the start.
sample() {
    local elapsed=$1 rss rss_anon fds metrics="$TMP/metrics-sample.txt"
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$PROXY_PID/status") ||
        die "the proxy (pid $PROXY_PID) is gone; its log:"$'\n'"$(tail -n 20 "$PROXY_LOG")"
    # RssAnon is the heap and stacks; the rest of VmRSS is mostly pages of the binary that
    # grow as more code runs.
    rss_anon=$(awk '/^RssAnon:/ { print $2 }' "/proc/$PROXY_PID/status")
    fds=$(open_fds)
    metrics_to "$metrics" || die "cannot scrape the proxy's metrics"
    echo "$elapsed,$rss,$rss_anon,$fds,$(metric_total doris_fe_proxy_small_file_requests_total "$metrics"),$(metric_total doris_fe_proxy_proxied_requests_total "$metrics")" >>"$SAMPLES"
}

# --- Load ---------------------------------------------------------------------------------------

LOAD_AVERAGE=$(cut -d ' ' -f 1 /proc/loadavg)
metrics_to "$TMP/metrics-before.txt" || die "cannot scrape the proxy's metrics"
log "load: ${#KINDS[@]} kinds x $CONNECTIONS connections for $DURATION s, a sample every $SAMPLE_SECONDS s"
START=$(date +%s)
for kind in "${KINDS[@]}"; do
    timeout --signal=INT $((DURATION + LOAD_TAIL_SECONDS + 60)) \
        wrk -t1 -c"$CONNECTIONS" -d"$((DURATION + LOAD_TAIL_SECONDS))s" --timeout 5s -s "$SOAK_DIR/kind.lua" \
        "http://127.0.0.1:$PROXY_PORT" -- "$kind" "$TOKEN" "$FIRST_ID" "$IDS" \
        >"$TMP/wrk-$kind.txt" 2>&1 &
    WRK_PIDS+=($!)
done

sample 0
next=$SAMPLE_SECONDS
while ((next <= DURATION)); do
    sleep $((START + next - $(date +%s) > 0 ? START + next - $(date +%s) : 0))
    sample "$next"
    if ((next % 60 == 0)); then
        log "$(tail -n 1 "$SAMPLES") (elapsed_s,rss_kib,rss_anon_kib,fds,small_file_requests,proxied_requests)"
    fi
    next=$((next + SAMPLE_SECONDS))
done

for pid in "${WRK_PIDS[@]}"; do
    wait "$pid" || log "a wrk process (pid $pid) exited with status $?"
done
WRK_PIDS=()
# Requests in flight at wrk's stop finish within a second on loopback.
sleep 1
metrics_to "$TMP/metrics-after.txt" || die "cannot scrape the proxy's metrics"
kill -0 "$PROXY_PID" 2>/dev/null || die "the proxy exited during the run; its log:"$'\n'"$(tail -n 20 "$PROXY_LOG")"

# --- Verdict ---------------------------------------------------------------------------------

wrk_args=()
for kind in "${KINDS[@]}"; do
    wrk_args+=(--wrk "$kind=$TMP/wrk-$kind.txt")
done
set +e
python3 "$SOAK_DIR/check.py" --samples "$SAMPLES" --baseline-seconds "$BASELINE" \
    --metrics-before "$TMP/metrics-before.txt" --metrics-after "$TMP/metrics-after.txt" \
    "${wrk_args[@]}" --markdown "$TMP/summary.md" >/dev/null
RESULT=$?
set -e
((RESULT <= 1)) || die "benches/soak/check.py failed (status $RESULT)"

COMMIT=$(cd "$ROOT" && git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [[ -n $(cd "$ROOT" && git status --porcelain 2>/dev/null) ]]; then
    COMMIT="$COMMIT with uncommitted changes"
fi
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
WARNINGS=$(grep -c ' WARN ' "$PROXY_LOG" || true)
ERRORS=$(grep -c ' ERROR ' "$PROXY_LOG" || true)
# The first few warning and error lines, without their timestamps, for the record.
LOG_PROBLEMS=$(grep -E ' (WARN|ERROR) ' "$PROXY_LOG" | sed 's/^\[[^ ]* /[/' | head -n 5 || true)

cat <<EOF

### $(date -u -d "@$START" '+%Y-%m-%d %H:%M UTC'), commit $COMMIT

Command: \`SOAK_DURATION=$DURATION SOAK_CONNECTIONS=$CONNECTIONS SOAK_IDS=$IDS SOAK_KINDS=$KINDS_TEXT SOAK_FE_TIMEOUT_MS=$FE_TIMEOUT_MS SOAK_BASELINE_SECONDS=$BASELINE benches/soak.sh\`

Machine: $(nproc) CPUs (\`nproc\`), $CPU_MODEL, shared by wrk, nginx and the proxy;
1-minute load average $LOAD_AVERAGE before the load. $(wrk -v 2>&1 | head -n 1 | cut -d ' ' -f 1-2),
$(nginx -v 2>&1 | sed 's/^nginx version: //'); proxy \`server.threads: 2\`, access log $([[ $ACCESS_LOG == 1 ]] && echo on || echo off),
$IDS cached files of 1 to 16 KiB, ${#KINDS[@]} wrk processes (one per kind) of 1 thread and $CONNECTIONS connections.

Samples every $SAMPLE_SECONDS s ($(($(wc -l <"$SAMPLES") - 1)) in all), compared from the first at or after $BASELINE s:

$(cat "$TMP/summary.md")

Proxy log: $WARNINGS warning and $ERRORS error lines.$([[ -z $LOG_PROBLEMS ]] || printf ' The first ones:\n\n%s\n' "$(sed 's/^/    /' <<<"$LOG_PROBLEMS")")

Samples one a minute, as elapsed s / VmRSS KiB / RssAnon KiB / open fds:
\`$(awk -F, -v step="$SAMPLE_SECONDS" 'NR > 1 && ($1 % 60 == 0 || $1 < step) { printf "%s%s/%s/%s/%s", (n++ ? "; " : ""), $1, $2, $3, $4 } END { print "" }' "$SAMPLES")\`
EOF
echo
if ((RESULT != 0)) || [[ $KEEP == 1 ]]; then
    echo "samples: $SAMPLES"
fi
if ((RESULT == 0)); then
    echo "PASS"
else
    echo "FAIL"
fi
exit "$RESULT"
