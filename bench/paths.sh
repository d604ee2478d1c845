#!/usr/bin/env bash
# Load Concierge's other token paths, on SQLite and on PostgreSQL: authorization-code
# redemption (a fresh code per request), refresh (a confidential client's token), and
# introspection; client_credentials again for reference. Concierge alone: these paths need
# per-request fixtures the peer's setup does not have. Measures, asserts nothing.
#
#   bench/paths.sh                          # DURATION=5s CONNECTIONS=16 CODES=60000
#
# Environment as bench/run.sh: PG_ADMIN_URL, DURATION, THREADS, CONNECTIONS, WARMUP.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
DURATION=${DURATION:-5s}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-16}
WARMUP=${WARMUP:-2s}
CODES=${CODES:-60000}
WARM_CODES=${WARM_CODES:-10000}
PORT=${OURS_PORT:-8089}

export CLIENT_ID=bench
export CLIENT_SECRET=bench-secret-0123456789abcdef0123456789abcdef
export RESOURCE=http://127.0.0.1:9999/mcp
export SCOPE=tools:read

work=$(mktemp -d)
pid=""
pg_db=""
cleanup() {
    [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
    if [ -n "$pg_db" ]; then
        psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*" >&2; }

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } >&2
say "building Concierge and the fixture seeder (release)"
cargo build --release --quiet --bin concierge --example bench_seed
bin=$root/target/release/concierge
seed=$root/target/release/examples/bench_seed

wait_for() {
    for _ in $(seq 1 100); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.1; done
    echo "nothing answered at $1" >&2; return 1
}

# run NAME LUA [extra env...] -> prints a result row
run() {
    local name=$1 lua=$2; shift 2
    env "$@" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$lua" "http://127.0.0.1:$PORT" >/dev/null
    local line
    line=$(env "$@" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$lua" "http://127.0.0.1:$PORT" | grep '^RESULT')
    sed -E "s/RESULT rps=([0-9]+) p50_us=([0-9]+) p99_us=([0-9]+) errors_non2xx=([0-9]+)/$(printf '%-9s %-18s' "$store" "$name") \1 \2 \3 \4/" <<<"$line"
}

stores=(sqlite)
if psql -q "$PG_ADMIN_URL" -c 'SELECT 1' >/dev/null 2>&1; then stores+=(postgres); fi
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
rows=()
for store in "${stores[@]}"; do
    case $store in
        sqlite) url="sqlite://$work/paths.db" ;;
        postgres)
            pg_db="concierge_paths_$(date +%s)"
            psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE \"$pg_db\"" >/dev/null
            url=$(sed -E "s#/[^/]*\$#/$pg_db#" <<<"$PG_ADMIN_URL") ;;
    esac
    data=$work/data-$store; mkdir -p "$data"
    common=(--data-dir "$data" --database-url "$url")
    "$bin" "${common[@]}" --init resource add --uri "$RESOURCE" --name Bench --scope "tools:read=Read" >/dev/null
    "$bin" "${common[@]}" client add --name bench --id "$CLIENT_ID" --auth-method client_secret_post \
        --grant-type authorization_code --grant-type refresh_token --grant-type client_credentials \
        --redirect-uri http://127.0.0.1/callback --may-introspect --scope tools:read \
        --secret-from-env CLIENT_SECRET >/dev/null
    say "$store: seeding $CODES codes"
    RESOURCE=$RESOURCE "$seed" "$url" "$CODES" "$work"
    head -n "$WARM_CODES" "$work/codes.txt" >"$work/warm.txt"
    tail -n +"$((WARM_CODES + 1))" "$work/codes.txt" >"$work/run.txt"
    # The token endpoint's rate limits stay on (their cost is measured) but out of reach.
    CONCIERGE_RATE_LIMITS__TOKEN_PER_CLIENT=1000000000 CONCIERGE_RATE_LIMITS__TOKEN_PER_ADDRESS=1000000000 \
    "$bin" "${common[@]}" serve --listen "127.0.0.1:$PORT" --issuer "http://127.0.0.1:$PORT" \
        >"$work/ours.log" 2>&1 &
    pid=$!
    wait_for "http://127.0.0.1:$PORT/readyz"
    token=$(curl -fsS "http://127.0.0.1:$PORT/token" -d grant_type=client_credentials \
        -d client_id=$CLIENT_ID -d client_secret=$CLIENT_SECRET -d scope=tools:read \
        --data-urlencode resource=$RESOURCE | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
    say "$store: loading (wrk -t$THREADS -c$CONNECTIONS -d$DURATION after $WARMUP)"
    rows+=("$(run client_credentials bench/client-credentials.lua)")
    # The warm-up spends its own codes; the measured run starts on fresh ones.
    env BENCH_PATH=code CODES_FILE="$work/warm.txt" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" \
        -s bench/token-paths.lua "http://127.0.0.1:$PORT" >/dev/null
    line=$(env BENCH_PATH=code CODES_FILE="$work/run.txt" wrk -t"$THREADS" -c"$CONNECTIONS" \
        -d"$DURATION" -s bench/token-paths.lua "http://127.0.0.1:$PORT" | grep '^RESULT')
    rows+=("$(sed -E "s/RESULT rps=([0-9]+) p50_us=([0-9]+) p99_us=([0-9]+) errors_non2xx=([0-9]+)/$(printf '%-9s %-18s' "$store" code_redemption) \1 \2 \3 \4/" <<<"$line")")
    rows+=("$(run refresh bench/token-paths.lua BENCH_PATH=refresh REFRESH_FILE="$work/refresh.txt")")
    rows+=("$(run introspection bench/token-paths.lua BENCH_PATH=introspect ACCESS_TOKEN="$token")")
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    if [ "$store" = postgres ]; then
        psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null; pg_db=""
    fi
done
echo
printf '%-9s %-18s %s %s %s %s\n' store path rps p50_us p99_us non2xx
printf '%s\n' "${rows[@]}"
echo "($(nproc) cores, load average before: $load_before; wrk -t$THREADS -c$CONNECTIONS -d$DURATION;"
echo " code_redemption with more requests than seeded codes shows the surplus as non2xx)"
