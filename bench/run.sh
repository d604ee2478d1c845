#!/usr/bin/env bash
# Load every token path of Concierge and of the peer, node-oidc-provider configured for the
# same work (bench/peer-paths.mjs), with the same wrk scripts, in alternation, on SQLite and on
# PostgreSQL; print the figures and the ratio ours/peer per path. Token exchange, the
# device grant and CIBA, which the peer's setup lacks, are compared with our own client
# credentials. Measures, asserts nothing.
#
#   bench/run.sh                        # every path, both stores (PostgreSQL when one answers)
#   PATHS="cc code" ROUNDS=5 bench/run.sh
#
# Paths (PATHS, in this order by default): cc (client credentials), code (authorization code
# redemption, codes seeded on both sides), refresh (a public client's refresh token, rotated),
# introspect (of a refresh token: the peer does not introspect its JWT access tokens), revoke
# (a fresh refresh token each), register (RFC 7591), discovery, jwks, authorize (signed in,
# consent remembered: a 303 with a code); ours only: introspect_jwt (one of our JWT access
# tokens, a machine's), introspect_user (a user's, whose user is read), exchange, device
# (the device grant's redemption of an approved device code) and ciba (CIBA's poll of a
# request its user approved).
#
# Environment: PEER_DIR (default ../shared/bench: the peer's package.json), PG_ADMIN_URL
# (default postgres://postgres@127.0.0.1:5432/test; a fresh database is created on it and
# dropped after), DURATION (5s), THREADS (1), CONNECTIONS (16), WARMUP (2s), ROUNDS (3: peer
# and Concierge are loaded in alternation this many times per path and the medians reported;
# a round in which either side ran past its seeded fixtures is left out of them, and said),
# COUNT (60000 fixtures of each kind seeded in Concierge's store), PEER_COUNT (60000, in the
# peer's memory), STORES (sqlite postgres), CEILING (1: the client-credentials rounds also load
# ../shared/bench/ceiling, a bare handler that only parses, checks the secret and signs; 0: not),
# BULK (0; N: instead of the peer, compare Concierge on a store already holding N registered
# clients, consents, codes, refresh-token families and audit events with Concierge on an empty
# one, and report the database size per grant; issue 17.2), BASE_BIN (unset; a path to another
# build of concierge, say the last release's: instead of the peer, compare this build with it,
# both on an empty store seeded alike, to measure a change; with BULK too, both on a store
# holding BULK rows of each kind), NEW_CONNECTIONS (0; 1: every request on a connection of its
# own, `Connection: close`, for every server alike, as a client that keeps none alive; the wrk
# scripts read it).
# Traffic goes to 127.0.0.1 only; every process started here is stopped on exit.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
PEER_DIR=${PEER_DIR:-$root/../shared/bench}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
DURATION=${DURATION:-5s}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-16}
WARMUP=${WARMUP:-2s}
ROUNDS=${ROUNDS:-3}
COUNT=${COUNT:-60000}
PEER_COUNT=${PEER_COUNT:-60000}
PATHS=${PATHS:-cc code refresh introspect revoke register discovery jwks authorize introspect_jwt introspect_user exchange device ciba}
OURS_PORT=${OURS_PORT:-8089}
PEER_PORT=${PEER_PORT:-4000}
BULK=${BULK:-0}
BASE_BIN=${BASE_BIN:-}
# Is the other side Concierge too (on an empty store, or another build)?
against_self() { [ "$BULK" != 0 ] || [ -n "$BASE_BIN" ]; }
CEILING=${CEILING:-$(against_self && echo 0 || echo 1)}
CEILING_PORT=${CEILING_PORT:-4900}

# The clients, resources and server settings (CLIENT_ID, RESOURCE, configure_ours, serve_ours).
. "$root/bench/setup.sh"

work=$(mktemp -d)
pids=()
pg_prefix=concierge_bench_$$_
# drop_databases: the PostgreSQL databases this run created
drop_databases() {
    local db
    for db in $(psql -qtA "$PG_ADMIN_URL" -c "SELECT datname FROM pg_database WHERE datname LIKE '$pg_prefix%'" 2>/dev/null); do
        psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
    done
}
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    drop_databases
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
if ! against_self && { ! command -v node >/dev/null || ! command -v npm >/dev/null; }; then
    echo "node and npm are needed for the peer (node-oidc-provider); no figures" >&2
    exit 1
fi

if ! against_self; then
    say "preparing the peer (node-oidc-provider) from $PEER_DIR"
    cp -r "$PEER_DIR/." "$work/peer"
    chmod -R u+w "$work/peer"
    cp "$root/bench/peer-paths.mjs" "$work/peer/"
    (cd "$work/peer" && npm install --no-audit --no-fund --silent) >&2
fi

say "building Concierge and its fixture seeder (release)"
build_release
bin=$root/target/release/concierge
seed=$root/target/release/examples/bench_seed
if [ "$CEILING" != 0 ]; then
    say "building the ceiling (release; its own target folder, kept for the next run)"
    cp -r "$PEER_DIR/ceiling" "$work/ceiling"
    chmod -R u+w "$work/ceiling"
    (cd "$work/ceiling" && CARGO_TARGET_DIR=$root/target/bench-ceiling cargo build --release --quiet)
    CLIENT_SECRET=$CLIENT_SECRET "$root/target/bench-ceiling/release/ceiling" "$CEILING_PORT" \
        >"$work/ceiling.log" 2>&1 &
    pids+=("$!")
fi

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# rss_kib PID FIELD -> the process's VmRSS (now) or VmHWM (its peak), KiB
rss_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
# median of the arguments
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
sum() { printf '%s\n' "$@" | awk '{ s += $1 } END { print s + 0 }'; }

# --- the two servers ---------------------------------------------------------------------
# start_ours SIDE DATABASE_URL PORT BULK [SERVE_BIN]: configure, seed (with BULK rows of each
# kind a deployment accumulates, when not 0) and start Concierge (SERVE_BIN, this build by
# default); sets SIDE_pid, SIDE_env, SIDE_fixtures and SIDE_db_bytes (the database's size
# after seeding).
start_ours() {
    local side=$1 url=$2 port=$3 bulk=$4 serve_bin=${5:-$bin}
    local -n pid_ref=${side}_pid env_ref=${side}_env fixtures_ref=${side}_fixtures db_bytes_ref=${side}_db_bytes
    local data=$work/data-$store-$side fixtures=$work/$side-$store
    mkdir -p "$data" "$fixtures"
    configure_ours "$bin" "$data" "$url"
    say "$store ($side): seeding $COUNT codes, refresh tokens and revocable tokens, and $bulk of each kind a deployment keeps"
    "$seed" "$url" "$COUNT" "$fixtures" "$bulk"
    db_bytes_ref=$(db_bytes "$url")
    serve_ours "$serve_bin" "$data" "$url" "$port" "$work/$side-$store.log"
    pid_ref=$!
    pids+=("$pid_ref")
    wait_for "http://127.0.0.1:$port/.well-known/oauth-authorization-server"
    path_env "http://127.0.0.1:$port" "$fixtures"
    env_ref=("${PATH_ENV[@]}")
    fixtures_ref=$fixtures
}

# db_bytes DATABASE_URL -> the database's size in bytes
db_bytes() {
    case $1 in
        # Pages in use, as a reader sees them (the write-ahead log included).
        sqlite://*) python3 -c 'import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
q = lambda p: c.execute("PRAGMA " + p).fetchone()[0]
print((q("page_count") - q("freelist_count")) * q("page_size"))' "${1#sqlite://}" ;;
        *) psql -qtA "$1" -c 'SELECT pg_database_size(current_database())' ;;
    esac
}

# new_database NAME -> a database URL for this store
new_database() {
    case $store in
        sqlite) echo "sqlite://$work/$1.db" ;;
        postgres)
            local db=$pg_prefix$1
            psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE \"$db\"" >/dev/null
            sed -E "s#/[^/]*\$#/$db#" <<<"$PG_ADMIN_URL" ;;
    esac
}

# start_peer: node-oidc-provider with its own fixtures in memory; sets peer_pid, peer_env.
start_peer() {
    local fixtures=$work/peer-$store
    mkdir -p "$fixtures"
    say "$store: starting the peer with $PEER_COUNT fixtures of each kind"
    node "$work/peer/peer-paths.mjs" "$PEER_PORT" "$fixtures" "$PEER_COUNT" >"$work/peer-$store.log" 2>&1 &
    peer_pid=$!
    pids+=("$peer_pid")
    wait_for "http://127.0.0.1:$PEER_PORT/.well-known/openid-configuration"
    p() { awk -v n="$1" '$1 == n { print $2 }' "$fixtures/paths.txt"; }
    local token_path refresh
    token_path=$(p token)
    refresh=$(tail -n 1 "$fixtures/revoke.txt")
    sed -i '$d' "$fixtures/revoke.txt"
    peer_env=(TOKEN_PATH="$token_path" INTROSPECT_PATH="$(p introspection)" REVOKE_PATH="$(p revocation)"
        REGISTER_PATH="$(p registration)" AUTHORIZE_PATH="$(p authorization)" JWKS_PATH="$(p jwks)"
        DISCOVERY_PATH="$(p discovery)" ACCESS_TOKEN="$refresh" COOKIE="$(cat "$fixtures/cookie.txt")")
    peer_fixtures=$fixtures
}

# --- loading -----------------------------------------------------------------------------
# Fixtures spent so far, per side and path, in files: the loads run in subshells.
spent_file() { echo "$work/spent-$store-$1-$2"; }
spent() { cat "$(spent_file "$1" "$2")" 2>/dev/null || echo 0; }

# wrk_run SIDE PATH DURATION -> the RESULT line
wrk_run() {
    local side=$1 path=$2 duration=$3 port lua=$root/bench/paths.lua fixtures="" extra=() file=""
    local bench_path=$path
    if [ "$side" = peer ]; then port=$PEER_PORT extra=("${peer_env[@]}") fixtures=$peer_fixtures
    elif [ "$side" = ceiling ]; then port=$CEILING_PORT
    else port=$OURS_PORT extra=("${ours_env[@]}") fixtures=$ours_fixtures; fi
    if [ "$path" = cc ]; then
        lua=$root/bench/client-credentials.lua
    elif [ "$path" = introspect_jwt ] || [ "$path" = introspect_user ]; then
        # A machine's token, or a user's (whose user introspection reads, to answer inactive
        # once they are disabled or deleted).
        local token_var=JWT
        [ "$path" = introspect_user ] && token_var=SUBJECT_TOKEN bench_path=introspect_jwt
        extra+=(ACCESS_TOKEN="$(printf '%s\n' "${extra[@]}" | sed -n "s/^$token_var=//p")")
    elif [ "$path" = code ] || [ "$path" = refresh ] || [ "$path" = revoke ] || [ "$path" = device ] || [ "$path" = ciba ]; then
        # Each request spends a fixture: start after those the earlier runs spent.
        file=$fixtures/$(case $path in code) echo codes ;; device) echo devices ;; *) echo "$path" ;; esac).txt
        local slice=$work/slice
        tail -n +"$(( $(spent "$side" "$path") + 1 ))" "$file" >"$slice"
        extra+=(FIXTURES="$slice")
    fi
    local line
    line=$(env "${extra[@]}" BENCH_PATH="$bench_path" \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"$duration" -s "$lua" "http://127.0.0.1:$port" | grep '^RESULT')
    # Requests still in flight when wrk stopped may have spent a fixture too.
    local used now_spent
    used=$(sed -nE 's/.* used=([0-9]+).*/\1/p' <<<"$line")
    now_spent=$(( $(spent "$side" "$path") + ${used:-0} + CONNECTIONS * THREADS ))
    echo "$now_spent" >"$(spent_file "$side" "$path")"
    # Past the end of the fixtures the requests measure something else (an unknown code is
    # refused, an unknown token's revocation answers 200): say so under the table.
    if [ -n "${file:-}" ] && [ "$now_spent" -gt "$(wc -l <"$file")" ]; then
        echo "$side" >>"$work/ran-out-$store-$path"
    fi
    echo "$line"
}

# ran_out_runs -> how many runs of this store and path have run past their fixtures so far
ran_out_runs() { if [ -f "$work/ran-out-$store-$path" ]; then wc -l <"$work/ran-out-$store-$path"; else echo 0; fi; }

# load SIDE PATH -> "rps p50_us p99_us errors", after a warm-up
load() {
    wrk_run "$1" "$2" "$WARMUP" >/dev/null
    local line
    line=$(wrk_run "$1" "$2" "$DURATION")
    echo "$store $1 $2: $line" >&2
    sed -E 's/.*rps=([0-9]+) p50_us=([0-9]+) p99_us=([0-9]+) errors_non2xx=([0-9]+).*/\1 \2 \3 \4/' <<<"$line"
}

# Against the peer, or against ourselves (BULK, BASE_BIN).
peer_has() { against_self || { [ "$1" != exchange ] && [ "$1" != device ] && [ "$1" != ciba ] && [ "$1" != introspect_jwt ] && [ "$1" != introspect_user ]; }; }

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -n "${STORES:-}" ]; then
    read -r -a stores <<<"$STORES"
else
    stores=(sqlite)
    if psql -q "$PG_ADMIN_URL" -c 'SELECT 1' >/dev/null 2>&1; then
        stores+=(postgres)
    else
        echo "!! PostgreSQL not reachable at $PG_ADMIN_URL: measuring SQLite only" >&2
    fi
fi

results=()
warnings=()
memory=()
ceiling=()
sizes=()
for store in "${stores[@]}"; do
    if [ -n "$BASE_BIN" ]; then
        start_ours peer "$(new_database base)" "$PEER_PORT" "$BULK" "$BASE_BIN"
        start_ours ours "$(new_database ours)" "$OURS_PORT" "$BULK"
    elif [ "$BULK" = 0 ]; then
        start_ours ours "$(new_database ours)" "$OURS_PORT" 0
        start_peer
    else
        start_ours peer "$(new_database empty)" "$PEER_PORT" 0
        start_ours ours "$(new_database full)" "$OURS_PORT" "$BULK"
        sizes+=("$(printf '%-9s %12s %12s %10s' "$store" "$((peer_db_bytes / 1048576))" \
            "$((ours_db_bytes / 1048576))" "$(( (ours_db_bytes - peer_db_bytes) / BULK ))")")
    fi
    # Resident memory after start-up, idle (a few requests answered, nothing else).
    sleep 2
    ours_idle=$(rss_kib "$ours_pid" VmRSS) peer_idle=$(rss_kib "$peer_pid" VmRSS)
    ours_idle_anon=$(rss_kib "$ours_pid" RssAnon)
    ours_cc_peak="" peer_cc_peak="" cc_rps=""
    for path in $PATHS; do
        say "$store $path: $ROUNDS rounds; wrk -t$THREADS -c$CONNECTIONS -d$DURATION"
        # Alternating rounds spread out any noise from other work on the machine.
        declare -a pr=() pp50=() pp99=() perr=() or=() op50=() op99=() oerr=() cr=()
        dropped=0
        for _ in $(seq 1 "$ROUNDS"); do
            ran_out_before=$(ran_out_runs)
            if peer_has "$path"; then
                read -r pa pb pc pd < <(load peer "$path")
            fi
            read -r a b c d < <(load ours "$path")
            # A round in which either side ran past its fixtures measured something else
            # (an unknown code is refused, an unknown token's revocation answers 200): it is
            # left out of the medians, both sides of it, while another round remains.
            if [ "$(ran_out_runs)" != "$ran_out_before" ] && [ "$ROUNDS" -gt 1 ]; then
                dropped=$((dropped + 1))
                continue
            fi
            if peer_has "$path"; then
                pr+=("$pa") pp50+=("$pb") pp99+=("$pc") perr+=("$pd")
            fi
            or+=("$a") op50+=("$b") op99+=("$c") oerr+=("$d")
            if [ "$path" = cc ] && [ "$CEILING" != 0 ]; then
                read -r a _ _ _ < <(load ceiling cc)
                cr+=("$a")
            fi
        done
        if [ "${#or[@]}" = 0 ]; then
            # Every round ran out: nothing valid to report but what was measured, flagged below.
            or=("$a") op50=("$b") op99=("$c") oerr=("$d")
            if peer_has "$path"; then pr=("$pa") pp50=("$pb") pp99=("$pc") perr=("$pd"); fi
        fi
        o_rps=$(median "${or[@]}")
        if [ "$path" = cc ]; then
            # The peak under the client-credentials load, before any other path ran.
            ours_cc_peak=$(rss_kib "$ours_pid" VmHWM) peer_cc_peak=$(rss_kib "$peer_pid" VmHWM)
            cc_rps=$o_rps
            if [ "$CEILING" != 0 ]; then
                # Each round's ratio too, and their median: the servers' rounds can spread by a
                # third on a busy machine, and the ratio of the medians pairs rounds that ran
                # at different times (bench/README.md, "the ceiling in seven rounds").
                per_round=()
                for i in "${!cr[@]}"; do
                    per_round+=("$(awk -v o="${or[$i]}" -v c="${cr[$i]}" 'BEGIN { printf "%.2f", o / c }')")
                done
                ceiling+=("$(printf '%-9s %9s %9s   %12s   %13s   %s' "$store" "$o_rps" "$(median "${cr[@]}")" \
                    "$(awk -v o="$o_rps" -v c="$(median "${cr[@]}")" 'BEGIN { printf "%.2f", o / c }')" \
                    "$(median "${per_round[@]}")" "${per_round[*]}")")
            fi
        fi
        if peer_has "$path"; then
            p_rps=$(median "${pr[@]}")
            peer_cols=$(printf '%9s %8s %8s %6s' "$p_rps" "$(median "${pp50[@]}")" "$(median "${pp99[@]}")" "$(sum "${perr[@]}")")
            # Two decimals: against another build or an empty store the ratio is near 1, and
            # 0.86 printed as 0.9 hid a miss of 17.2's 10% bound.
            ratio=$(awk -v o="$o_rps" -v p="$p_rps" 'BEGIN { if (p > 0) printf "%.2f", o / p; else print "n/a" }')
        else
            peer_cols=$(printf '%9s %8s %8s %6s' - - - -)
            ratio=$(awk -v o="$o_rps" -v c="$cc_rps" 'BEGIN { if (c > 0) printf "%.2fcc", o / c; else print "n/a" }')
        fi
        # Rounds that ran past the seeded fixtures, or answered errors, measured something
        # else (errors and unknown tokens answer faster), so the ratio means little.
        if [ "$dropped" -gt 0 ] && [ "$dropped" -lt "$ROUNDS" ]; then
            warnings+=("$store $path: $dropped of $ROUNDS rounds left out of the medians: fixtures ran out ($(sort "$work/ran-out-$store-$path" | uniq -c |
                awk '{ printf "%s%s in %d runs", (NR > 1 ? ", " : ""), $2, $1 }')); raise COUNT / PEER_COUNT")
        elif [ -s "$work/ran-out-$store-$path" ]; then
            ratio="$ratio!"
            warnings+=("$store $path: fixtures ran out ($(sort "$work/ran-out-$store-$path" | uniq -c |
                awk '{ printf "%s%s in %d runs", (NR > 1 ? ", " : ""), $2, $1 }')); raise COUNT / PEER_COUNT")
        elif [ "$(sum "${oerr[@]}")" != 0 ] || [ "$(sum "${perr[@]}")" != 0 ]; then
            ratio="$ratio!"
            warnings+=("$store $path: non-2xx answers per round: ours ${oerr[*]}${perr[*]:+, peer ${perr[*]}}")
        fi
        results+=("$(printf '%-9s %-10s %9s %8s %8s %6s   %s   %6s' "$store" "$path" "$o_rps" \
            "$(median "${op50[@]}")" "$(median "${op99[@]}")" "$(sum "${oerr[@]}")" "$peer_cols" "$ratio")")
    done
    ours_peak=$(rss_kib "$ours_pid" VmHWM) peer_peak=$(rss_kib "$peer_pid" VmHWM)
    memory+=("$(printf '%-9s %10s %10s %12s %12s   %10s %12s %12s' "$store" \
        "$((ours_idle / 1024))" "$((ours_idle_anon / 1024))" "$(( ${ours_cc_peak:-0} / 1024 ))" "$((ours_peak / 1024))" \
        "$((peer_idle / 1024))" "$(( ${peer_cc_peak:-0} / 1024 ))" "$((peer_peak / 1024))")")
    stop "$peer_pid"
    stop "$ours_pid"
    [ "$store" = postgres ] && drop_databases
done
peer=peer
[ "$BULK" != 0 ] && peer=empty
[ -n "$BASE_BIN" ] && peer=base

echo
printf '%-9s %-10s %9s %8s %8s %6s   %9s %8s %8s %6s   %6s\n' \
    store path ours_rps p50_us p99_us errors "${peer}_rps" p50_us p99_us errors ratio
printf '%s\n' "${results[@]}"
echo "(medians of $ROUNDS alternating rounds; $(nproc) cores, load average before: $load_before;"
echo " wrk -t$THREADS -c$CONNECTIONS -d$DURATION after a $WARMUP warm-up; errors = non-2xx answers, summed;"
if [ -n "$BASE_BIN" ]; then
    held=""
    [ "$BULK" != 0 ] && held=", both holding $BULK of each kind a deployment keeps"
    echo " base = $BASE_BIN on a store seeded alike$held; ratio = this build/base)"
elif [ "$BULK" = 0 ]; then
    echo " ratio = ours/peer requests per second; NNcc = ours against our own client credentials)"
else
    echo " ours = a store holding $BULK of each: clients, consents, codes, refresh-token families and"
    echo " audit events; empty = the same server on a store with the fixtures only; ratio = ours/empty)"
    echo
    printf '%-9s %12s %12s %10s\n' store empty_MiB full_MiB bytes/grant
    printf '%s\n' "${sizes[@]}"
    echo "(database size after seeding; bytes/grant = the difference over $BULK: one row of each kind)"
fi
if [ "${#warnings[@]}" -gt 0 ]; then
    echo
    printf '!! %s\n' "${warnings[@]}"
fi
if [ "${#ceiling[@]}" -gt 0 ]; then
    echo
    printf '%-9s %9s %9s   %12s   %13s   %s\n' store ours_rps ceil_rps ours/ceiling median/round per_round
    printf '%s\n' "${ceiling[@]}"
    echo "(client credentials: medians of the same alternating rounds; ours/ceiling is the ratio of"
    echo " the medians, median/round the median of each round's ratio, per_round each round's)"
fi
echo
printf '%-9s %10s %10s %12s %12s   %10s %12s %12s\n' store ours_idle idle_anon ours_cc_peak ours_peak "${peer}_idle" "${peer}_cc_peak" "${peer}_peak"
printf '%s\n' "${memory[@]}"
echo "(resident memory in MiB: idle 2 s after start-up, and of it the process's own (RssAnon: heap,"
echo " stacks; the rest is the binary's pages, shared with the page cache); the peak under client"
echo " credentials, and the peak over every path)"
printf 'binary: %s MiB (%s MiB stripped)\n' \
    "$(awk -v b="$(stat -c %s "$bin")" 'BEGIN { printf "%.1f", b / 1048576 }')" \
    "$(strip -o "$work/stripped" "$bin" && awk -v b="$(stat -c %s "$work/stripped")" 'BEGIN { printf "%.1f", b / 1048576 }')"
# How much of bench/layout.txt this binary still has (bench/layout.sh rewrites it): names a
# change or a dependency update renamed are laid out among the rest, and cost idle memory.
nm --defined-only "$bin" | awk '{ print $NF }' | sort -u >"$work/defined"
printf 'code layout: %s of the %s functions bench/layout.txt names are in this binary\n' \
    "$(grep -v '^#' "$root/bench/layout.txt" | sort -u | comm -12 - "$work/defined" | wc -l)" \
    "$(grep -vc '^#' "$root/bench/layout.txt")"
