# Shell functions shared by benches/load.sh and benches/soak.sh. The script that sources
# this file defines `die` and `log` first.

# Checks that $2 is an integer from $3 to $4; $1 names the variable in the message.
check_range() {
    local name=$1 value=$2 min=$3 max=$4
    [[ $value =~ ^[0-9]+$ ]] || die "$name=$value is not a whole number"
    ((value >= min && value <= max)) || die "$name=$value is out of range; use $min to $max"
}

# Stops one process by pid with signal $2, then with KILL if it still runs after 10 seconds.
stop_pid() {
    local pid=$1 signal=$2
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not stop after SIG$signal within 10 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# Waits up to 15 seconds until URL $1 returns status 200. Fails early if pid $2 exits. $3,
# when given, names the server in the message logged on timeout.
wait_for_url() {
    local url=$1 pid=$2 what=${3:-}
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || return 1
        if curl -fsS --max-time 1 -o /dev/null "$url" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    if [[ -n $what ]]; then
        log "$what did not answer $url within 15 s"
    fi
    return 1
}
