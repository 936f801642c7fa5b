#!/usr/bin/env bash
# Load benchmark: doris-fe-proxy against nginx, both on 127.0.0.1, measured with wrk.
#
# Scenarios (LOAD_SCENARIOS, comma-separated, default all four):
#   hit          cache hits for a 1 KiB, a 64 KiB and the 700,000-byte file; nginx serves
#                the same bytes as static files
#   proxied      a tiny upstream answer: nginx proxy_pass with upstream keepalive against
#                the proxy forwarding a non-small-file path to the same upstream
#   cold         1,000 concurrent requests for one uncached id on a fresh proxy; the store
#                must be read once
#   working_set  random requests over 10,000 ids of 1 to 16 KiB with a 64 MiB cache; hit
#                ratio and peak RSS of the proxy
#
# Settings (environment variables):
#   LOAD_DURATION     seconds of one wrk run (default 10, 1 to 300)
#   LOAD_REPEAT       nginx/proxy run pairs per scenario (default 3, 1 to 20)
#   LOAD_CONNECTIONS  wrk connections (default 64, 1 to 1000)
#   LOAD_WRK_THREADS  wrk threads (default 2, at most LOAD_CONNECTIONS)
#   LOAD_RECORD       1 appends a dated section to BENCHMARKS.md, 0 only prints (default 1)
#   LOAD_PROXY_BIN    a prebuilt doris-fe-proxy binary to measure instead of building this
#                     tree with `cargo build --release`; the record then names that binary
#   LOAD_PERF_DIR     when set, one extra proxy run per wrk scenario runs under `perf record`
#                     after the measured runs, and its profile is written to this folder
#
# Needs cargo, nginx, wrk, python3, curl and lscpu. Exits 0 when every scenario ran, even
# if a target is missed, and non-zero when something fails to build or start.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCHES="$ROOT/benches"
TOKEN="5f0c8a54-2d7e-4c1b-9a3e-b7d9e1f24c60"
UPSTREAM_BODY="tiny upstream answer"
WORKING_SET_FIRST_ID=200000
WORKING_SET_IDS=10000
WORKING_SET_MAX_BYTES=$((64 * 1024 * 1024))
COLD_REQUESTS=1000

DURATION=${LOAD_DURATION:-10}
REPEAT=${LOAD_REPEAT:-3}
CONNECTIONS=${LOAD_CONNECTIONS:-64}
WRK_THREADS=${LOAD_WRK_THREADS:-2}
RECORD=${LOAD_RECORD:-1}
SCENARIOS=${LOAD_SCENARIOS:-hit,proxied,cold,working_set}
PERF_DIR=${LOAD_PERF_DIR:-}
PREBUILT_BIN=${LOAD_PROXY_BIN:-}

die() {
    echo "load.sh: error: $*" >&2
    exit 1
}

log() {
    echo "load.sh: $*" >&2
}

# shellcheck source=benches/lib.sh
source "$BENCHES/lib.sh"

check_range LOAD_DURATION "$DURATION" 1 300
check_range LOAD_REPEAT "$REPEAT" 1 20
check_range LOAD_CONNECTIONS "$CONNECTIONS" 1 1000
check_range LOAD_WRK_THREADS "$WRK_THREADS" 1 "$CONNECTIONS"
[[ $RECORD == 0 || $RECORD == 1 ]] || die "LOAD_RECORD=$RECORD must be 0 or 1"
for scenario in ${SCENARIOS//,/ }; do
    case $scenario in
    hit | proxied | cold | working_set) ;;
    *) die "LOAD_SCENARIOS has an unknown scenario '$scenario'; use hit, proxied, cold, working_set" ;;
    esac
done

wants() {
    [[ ",$SCENARIOS," == *",$1,"* ]]
}

# --- Tools -------------------------------------------------------------------------------

command -v nginx >/dev/null || die "nginx is not installed; run: apt-get install nginx-light wrk"
command -v wrk >/dev/null || die "wrk is not installed; run: apt-get install nginx-light wrk"
command -v python3 >/dev/null || die "python3 is not installed; run: apt-get install python3"
command -v curl >/dev/null || die "curl is not installed; run: apt-get install curl"
command -v cargo >/dev/null || die "cargo is not installed; install Rust (rustup) first"
command -v lscpu >/dev/null || die "lscpu is not installed; run: apt-get install util-linux"
if [[ -n $PERF_DIR ]]; then
    command -v perf >/dev/null || die "LOAD_PERF_DIR is set but perf is not installed; run: apt-get install linux-perf"
fi

# --- Processes and clean-up -----------------------------------------------------------------

TMP=$(mktemp -d /tmp/doris-fe-proxy-load.XXXXXX)
# nginx workers run as `nobody` when the master runs as root, and must read the store.
chmod 755 "$TMP"
NGINX_PID=""
UPSTREAM_PID=""
# The pid of the one proxy that runs at a time. It is emptied when the proxy stops, so the
# clean-up never signals a pid that the system may have given to another process since.
PROXY_PID=""

# Stops every process started here by pid: the proxy with INT, which is Pingora's fast
# shutdown, and nginx with TERM.
cleanup() {
    local status=$?
    if [[ -n $PROXY_PID ]]; then
        stop_pid "$PROXY_PID" INT
    fi
    if [[ -n $NGINX_PID ]]; then
        stop_pid "$NGINX_PID" TERM
    fi
    if [[ -n $UPSTREAM_PID ]]; then
        stop_pid "$UPSTREAM_PID" TERM
    fi
    if [[ $status -ne 0 ]]; then
        log "failed; logs and configs are kept in $TMP"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The load average before the build: other work on the machine skews every number.
LOAD_AVERAGE=$(cut -d ' ' -f 1 /proc/loadavg)
if awk -v load="$LOAD_AVERAGE" 'BEGIN { exit !(load > 0.5) }'; then
    log "warning: the 1-minute load average is $LOAD_AVERAGE before the run; other processes" \
        "share the CPUs and the results will be lower and noisier"
fi

# --- Build and store --------------------------------------------------------------------------

if [[ -n $PREBUILT_BIN ]]; then
    [[ -x $PREBUILT_BIN ]] || die "LOAD_PROXY_BIN=$PREBUILT_BIN is not an executable file"
    BIN=$PREBUILT_BIN
    log "using the prebuilt binary $BIN"
else
    log "building the release binary (cargo build --release)"
    (cd "$ROOT" && cargo build --release) || die "cargo build --release failed"
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/doris-fe-proxy"
    [[ -x $BIN ]] || die "the release binary $BIN is missing after the build"
fi

KEYSTORE="$ROOT/../shared/cases/files/11004/client keystore.jks"
if [[ ! -d $ROOT/../shared ]]; then
    KEYSTORE="$ROOT/examples/small_files/11004/client keystore.jks"
fi
[[ -f $KEYSTORE ]] || die "the 700,000-byte test file is missing: $KEYSTORE"

STORE="$TMP/store"
log "writing the store ($WORKING_SET_IDS working-set ids) to $STORE"
STORE_SUMMARY=$(python3 "$BENCHES/loadtool.py" store "$STORE" --keystore "$KEYSTORE" \
    --working-set-ids "$WORKING_SET_IDS") || die "cannot write the store"
WORKING_SET_BYTES=${STORE_SUMMARY##*working_set_bytes=}
chmod -R a+rX "$STORE"

# --- nginx ------------------------------------------------------------------------------------

ports=$(python3 "$BENCHES/loadtool.py" ports 2) || die "cannot find free ports on 127.0.0.1"
read -r -d '' NGINX_PORT UPSTREAM_PORT <<<"$ports" || true
NGINX_DIR="$TMP/nginx"
mkdir -p "$NGINX_DIR/temp"
HEALTH_BODY='{"msg":"success","code":0,"data":{"online_backend_num":1,"total_backend_num":1},"count":0}'
cat >"$NGINX_DIR/nginx.conf" <<EOF
daemon off;
worker_processes auto;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    # The proxy keeps a client connection for any number of requests; nginx's default of
    # 1000 would make wrk reconnect during the nginx runs only.
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path $NGINX_DIR/temp/body;
    proxy_temp_path $NGINX_DIR/temp/proxy;
    fastcgi_temp_path $NGINX_DIR/temp/fastcgi;
    uwsgi_temp_path $NGINX_DIR/temp/uwsgi;
    scgi_temp_path $NGINX_DIR/temp/scgi;

    upstream tiny {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive 64;
    }

    # The front server: static files from the store and proxy_pass to the tiny upstream.
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $STORE;

        location /proxied/ {
            proxy_pass http://tiny;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # The same request headers as the proxy sends upstream.
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Real-IP \$remote_addr;
        }
    }
}
EOF

# The tiny upstream runs in an nginx instance of its own, as an FE is a process of its own.
# In the front instance, a worker could serve the upstream connection that it opened
# itself, without waking another process, which no proxy in front of a real FE can do.
UPSTREAM_DIR="$TMP/upstream"
mkdir -p "$UPSTREAM_DIR/temp"
cat >"$UPSTREAM_DIR/nginx.conf" <<EOF
daemon off;
worker_processes auto;
pid $UPSTREAM_DIR/nginx.pid;
error_log $UPSTREAM_DIR/error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path $UPSTREAM_DIR/temp/body;
    proxy_temp_path $UPSTREAM_DIR/temp/proxy;
    fastcgi_temp_path $UPSTREAM_DIR/temp/fastcgi;
    uwsgi_temp_path $UPSTREAM_DIR/temp/uwsgi;
    scgi_temp_path $UPSTREAM_DIR/temp/scgi;

    # The tiny upstream plays the FE. It returns the health response that the proxy checks
    # for, and a short fixed body on every other path.
    server {
        listen 127.0.0.1:$UPSTREAM_PORT;

        location = /api/health {
            default_type application/json;
            return 200 '$HEALTH_BODY';
        }
        location / {
            default_type text/plain;
            return 200 "$UPSTREAM_BODY";
        }
    }
}
EOF

for dir in "$NGINX_DIR" "$UPSTREAM_DIR"; do
    nginx -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" ||
        die "nginx rejects the generated config $dir/nginx.conf (see above)"
done
nginx -p "$UPSTREAM_DIR" -c "$UPSTREAM_DIR/nginx.conf" -e "$UPSTREAM_DIR/error.log" \
    >"$UPSTREAM_DIR/stdout.log" 2>&1 &
UPSTREAM_PID=$!
nginx -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" -e "$NGINX_DIR/error.log" \
    >"$NGINX_DIR/stdout.log" 2>&1 &
NGINX_PID=$!

wait_for_url "http://127.0.0.1:$UPSTREAM_PORT/api/health" "$UPSTREAM_PID" "upstream nginx" ||
    die "the upstream nginx did not start; its log: $(tail -n 20 "$UPSTREAM_DIR/error.log" 2>/dev/null)"
wait_for_url "http://127.0.0.1:$NGINX_PORT/proxied/ready" "$NGINX_PID" nginx ||
    die "nginx did not start; its log: $(tail -n 20 "$NGINX_DIR/error.log" 2>/dev/null)"
log "nginx pid $NGINX_PID on 127.0.0.1:$NGINX_PORT, tiny upstream nginx pid $UPSTREAM_PID on 127.0.0.1:$UPSTREAM_PORT"

# --- The proxy --------------------------------------------------------------------------------

PROXY_PORT=""
METRICS_PORT=""
PROXY_LOG=""

# Starts a fresh proxy named $1 with cache.max_bytes $2 on new ports, and waits until it
# serves metrics and forwards to the upstream. Sets PROXY_PID, PROXY_PORT, METRICS_PORT.
start_proxy() {
    local name=$1 max_bytes=$2
    local ports
    ports=$(python3 "$BENCHES/loadtool.py" ports 2) || die "cannot find free ports on 127.0.0.1"
    read -r -d '' PROXY_PORT METRICS_PORT <<<"$ports" || true
    local conf="$TMP/$name.yaml"
    PROXY_LOG="$TMP/$name.log"
    cat >"$conf" <<EOF
server:
  threads: $(nproc)
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1
  pid_file: $TMP/$name.pid
  upgrade_sock: $TMP/$name-upgrade.sock
listen: 127.0.0.1:$PROXY_PORT
access_log: false
fe:
  backends: ["127.0.0.1:$UPSTREAM_PORT"]
  health_check: { path: /api/health, interval_ms: 1000, timeout_ms: 1000 }
small_file:
  token: { value: "$TOKEN" }
  store: file://$STORE
  cache: { max_bytes: $max_bytes, ttl_seconds: 3600, negative_ttl_seconds: 5 }
  max_file_bytes: 1048576
  fallback_to_fe: false
metrics:
  listen: 127.0.0.1:$METRICS_PORT
EOF
    "$BIN" -c "$conf" >"$PROXY_LOG" 2>&1 &
    PROXY_PID=$!
    if ! wait_for_url "http://127.0.0.1:$METRICS_PORT/metrics" "$PROXY_PID" "proxy $name" ||
        ! wait_for_url "http://127.0.0.1:$PROXY_PORT/proxied/ready" "$PROXY_PID" "proxy $name"; then
        die "proxy $name did not start; its log:"$'\n'"$(tail -n 20 "$PROXY_LOG")"
    fi
    log "proxy $name pid $PROXY_PID on 127.0.0.1:$PROXY_PORT, metrics on 127.0.0.1:$METRICS_PORT"
}

stop_proxy() {
    stop_pid "$PROXY_PID" INT
    PROXY_PID=""
}

proxy_url() {
    echo "http://127.0.0.1:$PROXY_PORT/api/get_small_file?token=$TOKEN&file_id=$1"
}

# Prints the sum of the samples of metric $1 whose labels contain every string in $2...
metric_sum() {
    local name=$1
    shift
    curl -fsS --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics" |
        awk -v name="$name" -v filters="$*" '
            BEGIN { count = split(filters, wanted, " ") }
            index($0, name "{") == 1 || $1 == name {
                for (i = 1; i <= count; i++) if (index($0, wanted[i]) == 0) next
                sum += $NF
            }
            END { printf "%d\n", sum }'
}

# Prints the sum of the `_sum` samples of histogram $1, in milliseconds.
histogram_sum_ms() {
    curl -fsS --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics" |
        awk -v name="$1_sum" 'index($0, name) == 1 { sum += $NF } END { printf "%.2f\n", sum * 1000 }'
}

# --- wrk --------------------------------------------------------------------------------------

RESULTS="$TMP/results.tsv"
: >"$RESULTS"
REPORT_LUA="$BENCHES/wrk/report.lua"
RANDOM_LUA="$TMP/random_ids.lua"
cat "$BENCHES/wrk/random_ids.lua" "$BENCHES/wrk/report.lua" >"$RANDOM_LUA"

# Runs wrk against URL $1 with Lua script $2 for $3 seconds, passing the remaining arguments
# to the script, and prints the WRK_RESULT line of the run.
wrk_run() {
    local url=$1 script=$2 duration=$3
    shift 3
    local output
    output=$(timeout $((duration + 30)) wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${duration}s" \
        -s "$script" "$url" -- "$@") || die "wrk failed on $url: $output"
    grep '^WRK_RESULT ' <<<"$output" || die "wrk printed no WRK_RESULT line for $url: $output"
}

# Reads `key=value` field $2 of a WRK_RESULT line $1.
field() {
    local value=${1##* "$2"=}
    echo "${value%% *}"
}

CLOCK_TICKS=$(getconf CLK_TCK)

# Prints three CPU times in clock ticks: user + nice + system of the whole machine, the
# servers (both nginx instances, master and workers, and the running proxy), and this shell's waited-for
# children (wrk, through `times`). The first figure leaves out interrupt time, because the
# kernel counts the loopback network work there and not in any process.
cpu_snapshot() {
    local user nice system servers=0 pid ticks
    read -r _ user nice system _ </proc/stat
    for pid in $NGINX_PID $(pgrep -P "$NGINX_PID") $UPSTREAM_PID $(pgrep -P "$UPSTREAM_PID") \
        $PROXY_PID; do
        ticks=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }')
        servers=$((servers + ${ticks:-0}))
    done
    times >"$TMP/times"
    local children
    children=$(awk -v hz="$CLOCK_TICKS" 'NR == 2 {
        split($1, u, "m"); split($2, s, "m")
        printf "%d", ((u[1] * 60 + u[2]) + (s[1] * 60 + s[2])) * hz }' "$TMP/times")
    echo "$((user + nice + system)) $servers $children"
}

# Prints the CPU time that processes other than the servers and wrk used between two
# cpu_snapshot outputs $1 and $2 over $3 seconds, in percent of one CPU. It is an estimate,
# because it also counts this script's own short commands.
other_cpu_percent() {
    local -a before after
    read -r -a before <<<"$1"
    read -r -a after <<<"$2"
    awk -v busy=$((after[0] - before[0])) -v servers=$((after[1] - before[1])) \
        -v children=$((after[2] - before[2])) -v hz="$CLOCK_TICKS" -v seconds="$3" \
        'BEGIN { other = (busy - servers - children) / hz / seconds * 100
                 printf "%.0f", other < 0 ? 0 : other }'
}

# Runs one measured wrk run and appends it to the results: $1 scenario, $2 server, $3 rep,
# $4 URL, $5 script, then script arguments.
measure() {
    local scenario=$1 server=$2 rep=$3 url=$4 script=$5
    shift 5
    local line requests duration_us rps p50 p99 errors before after other server_us
    before=$(cpu_snapshot)
    line=$(wrk_run "$url" "$script" "$DURATION" "$@")
    after=$(cpu_snapshot)
    other=$(other_cpu_percent "$before" "$after" "$DURATION")
    requests=$(field "$line" requests)
    duration_us=$(field "$line" duration_us)
    p50=$(field "$line" p50_us)
    p99=$(field "$line" p99_us)
    errors=$(($(field "$line" connect_errors) + $(field "$line" read_errors) +
        $(field "$line" write_errors) + $(field "$line" status_errors) + $(field "$line" timeouts)))
    rps=$(awk -v r="$requests" -v d="$duration_us" 'BEGIN { printf "%.1f", r / (d / 1e6) }')
    # Server CPU per request: nginx and the proxy together, so that the tiny upstream's
    # share of a proxied request counts in both runs. The idle server adds about nothing.
    server_us=$(awk -v b="${before#* }" -v a="${after#* }" -v hz="$CLOCK_TICKS" -v r="$requests" \
        'BEGIN { split(b, x, " "); split(a, y, " "); printf "%.1f", (y[1] - x[1]) / hz / r * 1e6 }')
    printf 'run\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$server" "$rep" "$rps" \
        "$p50" "$p99" "$errors" "$other" "$server_us" >>"$RESULTS"
    printf '  %-12s %-6s run %d: %10s req/s  p50 %6s us  p99 %6s us  errors %s  server CPU %s us/req  other CPU %s%%\n' \
        "$scenario" "$server" "$rep" "$rps" "$p50" "$p99" "$errors" "$server_us" "$other" >&2
}

# Runs the nginx/proxy pairs of one scenario after a 1-second warm-up of each server, and
# alternates which server goes first. Arguments: $1 scenario, $2 nginx URL, $3 proxy URL,
# $4 Lua script. With the random-id script, $5 and $6 are the nginx and proxy request
# targets with `{id}` where the id goes.
run_pairs() {
    local scenario=$1 nginx_url=$2 proxy_url=$3 script=$4
    shift 4
    local nginx_args=() proxy_args=()
    if [[ $script == "$RANDOM_LUA" ]]; then
        nginx_args=("$1" "$WORKING_SET_FIRST_ID" "$WORKING_SET_IDS")
        proxy_args=("$2" "$WORKING_SET_FIRST_ID" "$WORKING_SET_IDS")
    fi
    wrk_run "$nginx_url" "$script" 1 "${nginx_args[@]}" >/dev/null
    wrk_run "$proxy_url" "$script" 1 "${proxy_args[@]}" >/dev/null
    for rep in $(seq "$REPEAT"); do
        if ((rep % 2 == 1)); then
            measure "$scenario" nginx "$rep" "$nginx_url" "$script" "${nginx_args[@]}"
            measure "$scenario" proxy "$rep" "$proxy_url" "$script" "${proxy_args[@]}"
        else
            measure "$scenario" proxy "$rep" "$proxy_url" "$script" "${proxy_args[@]}"
            measure "$scenario" nginx "$rep" "$nginx_url" "$script" "${nginx_args[@]}"
        fi
    done
    if [[ -n $PERF_DIR ]]; then
        mkdir -p "$PERF_DIR"
        log "profiling the proxy on $scenario (not measured) into $PERF_DIR/$scenario.data"
        # cpu-clock, a software event, because virtual machines often expose no hardware
        # counters; DWARF call graphs because release builds omit frame pointers.
        perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$PROXY_PID" -o "$PERF_DIR/$scenario.data" \
            -- sleep "$DURATION" >/dev/null 2>&1 &
        local perf_pid=$!
        wrk_run "$proxy_url" "$script" "$DURATION" "${proxy_args[@]}" >/dev/null
        wait "$perf_pid" || log "perf record on $scenario exited with an error"
    fi
}

# Checks that $1 returns status 200 with exactly the bytes of file $2.
check_body() {
    local url=$1 expected=$2
    curl -fsS --max-time 5 -o "$TMP/body" "$url" || die "GET $url failed"
    cmp -s "$TMP/body" "$expected" || die "GET $url returned other bytes than $expected"
}

# --- Scenarios --------------------------------------------------------------------------------

if wants hit || wants proxied; then
    start_proxy main "$WORKING_SET_MAX_BYTES"
fi

if wants hit; then
    log "scenario hit: cache hits against nginx static files"
    for entry in "hit_1k 1001 one-kib.bin" "hit_64k 1002 sixty-four-kib.bin" \
        "hit_700k 11004 client%20keystore.jks"; do
        read -r scenario id encoded_name <<<"$entry"
        file=$(echo "$STORE/$id"/*)
        nginx_url="http://127.0.0.1:$NGINX_PORT/$id/$encoded_name"
        # The first proxy request loads the file, so the measured runs are all hits.
        check_body "$(proxy_url "$id")" "$file"
        check_body "$nginx_url" "$file"
        run_pairs "$scenario" "$nginx_url" "$(proxy_url "$id")" "$REPORT_LUA"
    done
fi

if wants proxied; then
    log "scenario proxied: tiny upstream answer through nginx proxy_pass and through the proxy"
    printf '%s' "$UPSTREAM_BODY" >"$TMP/upstream-body"
    nginx_url="http://127.0.0.1:$NGINX_PORT/proxied/ping"
    proxy_target="http://127.0.0.1:$PROXY_PORT/proxied/ping"
    check_body "$nginx_url" "$TMP/upstream-body"
    check_body "$proxy_target" "$TMP/upstream-body"
    run_pairs proxied "$nginx_url" "$proxy_target" "$REPORT_LUA"
fi

if wants hit || wants proxied; then
    stop_proxy
fi

if wants cold; then
    log "scenario cold: $COLD_REQUESTS concurrent requests for one uncached id, fresh proxy each time"
    for rep in $(seq "$REPEAT"); do
        start_proxy "cold-$rep" "$WORKING_SET_MAX_BYTES"
        cold_line=$(python3 "$BENCHES/loadtool.py" cold-start --port "$PROXY_PORT" \
            --target "/api/get_small_file?token=$TOKEN&file_id=11004" --count "$COLD_REQUESTS" \
            --expect-file "$STORE/11004/client keystore.jks" --timeout 60) ||
            die "the cold-start client failed: $cold_line"
        gets=$(metric_sum doris_fe_proxy_store_operations_total 'op="get"')
        lists=$(metric_sum doris_fe_proxy_store_operations_total 'op="list"')
        miss_store=$(metric_sum doris_fe_proxy_small_file_requests_total 'outcome="miss_store"')
        hits=$(metric_sum doris_fe_proxy_small_file_requests_total 'outcome="hit"')
        store_ms=$(histogram_sum_ms doris_fe_proxy_store_operation_duration_seconds)
        stop_proxy
        printf 'cold\t%s\t%s gets=%s lists=%s miss_store=%s hit=%s store_ms=%s\n' "$rep" \
            "$cold_line" "$gets" "$lists" "$miss_store" "$hits" "$store_ms" >>"$RESULTS"
        log "  cold run $rep: $cold_line; store gets $gets, lists $lists (${store_ms} ms);" \
            "outcomes miss_store $miss_store, hit $hits"
    done
fi

if wants working_set; then
    log "scenario working_set: $WORKING_SET_IDS random ids, cache.max_bytes $WORKING_SET_MAX_BYTES"
    start_proxy working-set "$WORKING_SET_MAX_BYTES"
    check_body "$(proxy_url "$WORKING_SET_FIRST_ID")" "$STORE/$WORKING_SET_FIRST_ID/f.bin"
    # A full-length proxy run fills the cache before the hit ratio is counted.
    wrk_run "http://127.0.0.1:$PROXY_PORT" "$RANDOM_LUA" "$DURATION" \
        "/api/get_small_file?token=$TOKEN&file_id={id}" "$WORKING_SET_FIRST_ID" "$WORKING_SET_IDS" >/dev/null
    hits_before=$(metric_sum doris_fe_proxy_small_file_requests_total 'outcome="hit"')
    lookups_before=$(metric_sum doris_fe_proxy_small_file_requests_total)
    run_pairs working_set "http://127.0.0.1:$NGINX_PORT" "http://127.0.0.1:$PROXY_PORT" "$RANDOM_LUA" \
        "/{id}/f.bin" "/api/get_small_file?token=$TOKEN&file_id={id}"
    hits_after=$(metric_sum doris_fe_proxy_small_file_requests_total 'outcome="hit"')
    lookups_after=$(metric_sum doris_fe_proxy_small_file_requests_total)
    not_hits=$(metric_sum doris_fe_proxy_small_file_requests_total 'outcome="not_found"')
    errors=$(metric_sum doris_fe_proxy_small_file_requests_total 'outcome="error"')
    cache_bytes=$(metric_sum doris_fe_proxy_cache_bytes)
    cache_entries=$(metric_sum doris_fe_proxy_cache_entries)
    peak_rss_kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$PROXY_PID/status")
    {
        printf 'kv\tws_ids\t%s\n' "$WORKING_SET_IDS"
        printf 'kv\tws_bytes\t%s\n' "$WORKING_SET_BYTES"
        printf 'kv\tws_max_bytes\t%s\n' "$WORKING_SET_MAX_BYTES"
        printf 'kv\tws_hits\t%s\n' $((hits_after - hits_before))
        printf 'kv\tws_lookups\t%s\n' $((lookups_after - lookups_before))
        printf 'kv\tws_failed\t%s\n' $((not_hits + errors))
        printf 'kv\tws_cache_bytes\t%s\n' "$cache_bytes"
        printf 'kv\tws_cache_entries\t%s\n' "$cache_entries"
        printf 'kv\tws_peak_rss_bytes\t%s\n' $((peak_rss_kib * 1024))
    } >>"$RESULTS"
    stop_proxy
fi

# --- Report -----------------------------------------------------------------------------------

TABLE="$TMP/table.md"
echo
python3 "$BENCHES/loadtool.py" report "$RESULTS" --table-out "$TABLE" || die "cannot build the report"

if [[ $RECORD == 1 ]]; then
    commit=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo "unknown")
    if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
        commit="$commit with uncommitted changes"
    fi
    cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
    command_line=""
    if [[ -n $PREBUILT_BIN ]]; then
        command_line="LOAD_PROXY_BIN=$PREBUILT_BIN "
    fi
    command_line+="LOAD_DURATION=$DURATION LOAD_REPEAT=$REPEAT LOAD_CONNECTIONS=$CONNECTIONS"
    command_line+=" LOAD_WRK_THREADS=$WRK_THREADS LOAD_SCENARIOS=$SCENARIOS benches/load.sh"
    {
        echo
        if [[ -n $PREBUILT_BIN ]]; then
            echo "## $(date -u '+%Y-%m-%d %H:%M UTC'), prebuilt binary, harness at commit $commit"
        else
            echo "## $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit"
        fi
        echo
        echo "Command: \`$command_line\`"
        echo
        echo "Machine: $(nproc) CPUs (\`nproc\`), $cpu, shared by wrk, nginx and the proxy;"
        echo "1-minute load average $LOAD_AVERAGE before the run."
        echo "wrk $(wrk -v 2>&1 | awk 'NR == 1 { print $2 }') with \`-t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s\`;"
        echo "$(nginx -v 2>&1 | sed 's/^nginx version: //') with \`worker_processes auto\`; proxy \`server.threads: $(nproc)\`."
        echo
        cat "$TABLE"
    } >>"$ROOT/BENCHMARKS.md"
    log "appended the results to $ROOT/BENCHMARKS.md"
fi
