#!/usr/bin/env bash
# Load the token endpoint (client_credentials) of Concierge and of the peer,
# node-oidc-provider, with the same wrk script, one after the other, on SQLite and on
# PostgreSQL; print the figures and the ratio ours/peer. Measures, asserts nothing.
#
#   bench/run.sh                       # both stores (PostgreSQL when one answers)
#   DURATION=20s CONNECTIONS=16 bench/run.sh
#
# Environment: PEER_DIR (default ../shared/bench, the peer's files), PG_ADMIN_URL
# (default postgres://postgres@127.0.0.1:5432/test; a fresh database is created on it and
# dropped after), DURATION (10s), THREADS (1), CONNECTIONS (16), WARMUP (3s), ROUNDS (3:
# peer and Concierge are loaded in alternation this many times and the medians reported).
# Traffic goes to 127.0.0.1 only; every process started here is stopped on exit.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
PEER_DIR=${PEER_DIR:-$root/../shared/bench}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-16}
WARMUP=${WARMUP:-3s}
ROUNDS=${ROUNDS:-3}
OURS_PORT=${OURS_PORT:-8089}
PEER_PORT=${PEER_PORT:-4000}

export CLIENT_ID=bench
export CLIENT_SECRET=bench-secret-0123456789abcdef0123456789abcdef
export RESOURCE=http://127.0.0.1:9999/mcp
export SCOPE=tools:read
LUA=$root/bench/client-credentials.lua

work=$(mktemp -d)
pids=()
pg_db=""
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "$pg_db" ]; then
        psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*" >&2; }

# --- tools -------------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
    say "installing wrk (Debian package)"
    if ! { apt-get update -qq && apt-get install -y -qq wrk; } >&2; then
        echo "wrk is not installed and could not be installed; no figures" >&2
        exit 1
    fi
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "node and npm are needed for the peer (node-oidc-provider); no figures" >&2
    exit 1
fi

say "preparing the peer (node-oidc-provider) from $PEER_DIR"
cp -r "$PEER_DIR/." "$work/peer"
chmod -R u+w "$work/peer"
(cd "$work/peer" && npm install --no-audit --no-fund --silent) >&2

say "building Concierge (release)"
cargo build --release --quiet
bin=$root/target/release/concierge

wait_for() { # URL
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing answered at $1" >&2
    return 1
}

# load NAME BASE_URL -> prints "rps p50_us p99_us errors"
load() {
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$LUA" "$2" >/dev/null
    local out
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$LUA" "$2")
    local line
    line=$(grep '^RESULT' <<<"$out")
    echo "$1: $line" >&2
    sed -E 's/.*rps=([0-9]+) p50_us=([0-9]+) p99_us=([0-9]+) errors_non2xx=([0-9]+).*/\1 \2 \3 \4/' <<<"$line"
}

start_peer() {
    node "$work/peer/oidc-provider-peer.mjs" "$PEER_PORT" ES256 >"$work/peer.log" 2>&1 &
    peer_pid=$!
    pids+=("$peer_pid")
    wait_for "http://127.0.0.1:$PEER_PORT/.well-known/openid-configuration"
}

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# rss_kib PID FIELD -> the process's VmRSS (now) or VmHWM (its peak), KiB
rss_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }

# start_ours DATABASE_URL
start_ours() {
    local data=$work/data-$RANDOM
    mkdir -p "$data"
    local common=(--data-dir "$data" --database-url "$1")
    "$bin" "${common[@]}" --init resource add --uri "$RESOURCE" --name Bench \
        --scope "tools:read=Read" --scope "tools:write=Write" >/dev/null
    "$bin" "${common[@]}" client add --name bench --id "$CLIENT_ID" \
        --grant-type client_credentials --auth-method client_secret_post --scope "tools:read tools:write" \
        --secret-from-env CLIENT_SECRET >/dev/null
    # The token endpoint's rate limits stay on (their cost is measured) but out of reach.
    CONCIERGE_RATE_LIMITS__TOKEN_PER_CLIENT=1000000000 CONCIERGE_RATE_LIMITS__TOKEN_PER_ADDRESS=1000000000 \
    "$bin" "${common[@]}" serve --listen "127.0.0.1:$OURS_PORT" \
        --issuer "http://127.0.0.1:$OURS_PORT" >"$work/ours.log" 2>&1 &
    ours_pid=$!
    pids+=("$ours_pid")
    wait_for "http://127.0.0.1:$OURS_PORT/.well-known/oauth-authorization-server"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
stores=(sqlite)
if psql -q "$PG_ADMIN_URL" -c 'SELECT 1' >/dev/null 2>&1; then
    stores+=(postgres)
else
    echo "!! PostgreSQL not reachable at $PG_ADMIN_URL: measuring SQLite only" >&2
fi

# median of the arguments
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

results=()
memory=()
for store in "${stores[@]}"; do
    case $store in
        sqlite) url="sqlite://$work/bench-sqlite.db" ;;
        postgres)
            pg_db="concierge_bench_$(date +%s)"
            psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE \"$pg_db\"" >/dev/null
            url=$(sed -E "s#/[^/]*\$#/$pg_db#" <<<"$PG_ADMIN_URL")
            ;;
    esac

    say "$store: $ROUNDS rounds of peer (node-oidc-provider) then Concierge; wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
    # Both idle while the other is loaded; alternating rounds spread out any noise from
    # other work on the machine, and the medians are reported.
    start_peer
    start_ours "$url"
    # Resident memory after start-up, idle (a discovery request answered, nothing else).
    sleep 2
    ours_idle=$(rss_kib "$ours_pid" VmRSS) peer_idle=$(rss_kib "$peer_pid" VmRSS)
    declare -a pr=() pp50=() pp99=() perr=() or=() op50=() op99=() oerr=()
    for _ in $(seq 1 "$ROUNDS"); do
        read -r a b c d < <(load peer "http://127.0.0.1:$PEER_PORT")
        pr+=("$a") pp50+=("$b") pp99+=("$c") perr+=("$d")
        read -r a b c d < <(load "concierge/$store" "http://127.0.0.1:$OURS_PORT")
        or+=("$a") op50+=("$b") op99+=("$c") oerr+=("$d")
    done
    # The peak resident memory over all rounds of load.
    ours_peak=$(rss_kib "$ours_pid" VmHWM) peer_peak=$(rss_kib "$peer_pid" VmHWM)
    memory+=("$(printf '%-9s %12s %12s   %12s %12s' "$store" \
        "$((ours_idle / 1024))" "$((ours_peak / 1024))" "$((peer_idle / 1024))" "$((peer_peak / 1024))")")
    stop "$peer_pid"
    stop "$ours_pid"

    p_rps=$(median "${pr[@]}") o_rps=$(median "${or[@]}")
    ratio=$(awk -v o="$o_rps" -v p="$p_rps" 'BEGIN { if (p > 0) printf "%.1f", o / p; else print "n/a" }')
    results+=("$(printf '%-9s %9s %8s %8s %6s   %9s %8s %8s %6s   %5s' \
        "$store" "$o_rps" "$(median "${op50[@]}")" "$(median "${op99[@]}")" \
        "$(printf '%s\n' "${oerr[@]}" | awk '{ s += $1 } END { print s }')" \
        "$p_rps" "$(median "${pp50[@]}")" "$(median "${pp99[@]}")" \
        "$(printf '%s\n' "${perr[@]}" | awk '{ s += $1 } END { print s }')" "$ratio")")
    if [ "$store" = postgres ]; then
        psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null
        pg_db=""
    fi
done

echo
printf '%-9s %9s %8s %8s %6s   %9s %8s %8s %6s   %5s\n' \
    store ours_rps p50_us p99_us errors peer_rps p50_us p99_us errors ratio
printf '%s\n' "${results[@]}"
echo "(medians of $ROUNDS alternating rounds; $(nproc) cores, load average before: $load_before;"
echo " wrk -t$THREADS -c$CONNECTIONS -d$DURATION after a $WARMUP warm-up; errors = non-2xx answers, summed;"
echo " ratio = ours/peer requests per second)"
echo
printf '%-9s %12s %12s   %12s %12s\n' store ours_idle_MiB ours_peak_MiB peer_idle_MiB peer_peak_MiB
printf '%s\n' "${memory[@]}"
echo "(resident memory: idle 2 s after start-up, and the peak over the rounds of load)"
printf 'binary: %s MiB (%s MiB stripped)\n' \
    "$(awk -v b="$(stat -c %s "$bin")" 'BEGIN { printf "%.1f", b / 1048576 }')" \
    "$(strip -o "$work/stripped" "$bin" && awk -v b="$(stat -c %s "$work/stripped")" 'BEGIN { printf "%.1f", b / 1048576 }')"
