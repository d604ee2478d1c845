#!/usr/bin/env bash
# Records which functions of the release binary start-up and the benchmarked requests run,
# and writes them to bench/layout.txt, the order build.rs hands the linker (LLD's
# --symbol-ordering-file) so that those functions sit together at the front of the code.
#
# Why: an idle server keeps resident every page of its code that start-up touched, and the
# kernel maps a fault's whole 64 KiB neighbourhood. Spread over the binary, the few hundred
# functions start-up runs kept some 15 MiB of code resident; gathered together they fit in a
# small part of that (bench/README.md, "Code laid out by use").
#
#   bench/layout.sh              # SQLite, and PostgreSQL when one answers at PG_ADMIN_URL
#
# Run it again after a dependency update or a large change: symbols the file names that the
# binary no longer has are skipped, and functions it does not name are laid out after those
# it does, so a stale file costs memory, never correctness. Needs valgrind (callgrind) and wrk.
# Environment: PG_ADMIN_URL as bench/run.sh, PORT (8089). Traffic goes to 127.0.0.1 only.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
PORT=${PORT:-8089}
out=$root/bench/layout.txt
. "$root/bench/setup.sh"

for tool in valgrind wrk; do
    command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$tool"; } >&2
done
work=$(mktemp -d)
trap cleanup EXIT
say() { printf '== %s\n' "$*" >&2; }

say "building Concierge and its fixture seeder (release)"
build_release
bin=$root/target/release/concierge

stores=(sqlite)
if psql -q "$PG_ADMIN_URL" -c 'SELECT 1' >/dev/null 2>&1; then stores+=(postgres); fi

# record STORE: start the server under callgrind on a new store, send each benchmarked path
# for a second, stop it; its record is $work/callgrind-STORE.
record() {
    local store=$1 url data=$work/data-$1 fixtures=$work/fixtures-$1
    new_store "$store" "concierge_layout_$$"
    url=$STORE_URL
    mkdir -p "$fixtures"
    configure_ours "$bin" "$data" "$url"
    "$root/target/release/examples/bench_seed" "$url" 300 "$fixtures"
    say "$store: start-up and every benchmarked path, under callgrind"
    serve_ours "$bin" "$data" "$url" "$PORT" "$work/server-$store.log" \
        valgrind --tool=callgrind --callgrind-out-file="$work/callgrind-$store" \
        --compress-strings=no --compress-pos=no --dump-line=no --demangle=no
    local pid=$!
    bench_pids+=("$pid")
    wait_for "http://127.0.0.1:$PORT/readyz"
    # What start-up ran, apart from what the requests run.
    callgrind_control --dump "$pid" >/dev/null
    mv "$(ls "$work/callgrind-$store".* | head -n 1)" "$work/startup-$store"
    path_env "http://127.0.0.1:$PORT" "$fixtures"
    local path extra
    for path in cc code refresh introspect introspect_jwt revoke register discovery jwks authorize exchange device ciba; do
        extra=()
        case $path in
            code) extra=(FIXTURES="$fixtures/codes.txt") ;;
            device) extra=(FIXTURES="$fixtures/devices.txt") ;;
            ciba) extra=(FIXTURES="$fixtures/ciba.txt") ;;
            refresh | revoke) extra=(FIXTURES="$fixtures/$path.txt") ;;
            introspect_jwt) extra=(ACCESS_TOKEN="$(printf '%s\n' "${PATH_ENV[@]}" | sed -n 's/^JWT=//p')") ;;
        esac
        env "${PATH_ENV[@]}" "${extra[@]}" BENCH_PATH="$path" \
            wrk -t1 -c2 -d1s -s "$root/bench/paths.lua" "http://127.0.0.1:$PORT" >/dev/null
    done
    # The pages a person sees: sign-in, and an error page.
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT/signin"
    curl -sS -o /dev/null "http://127.0.0.1:$PORT/authorize?client_id=nobody"
    kill -TERM "$pid"
    wait "$pid" || true
}
for store in "${stores[@]}"; do record "$store"; done

# The functions that ran, by their mangled names, kept when the binary defines them (not
# libc's or OpenSSL's): those both stores ran first, then each store's own, so a server on
# either store touches one run of pages. Within each, the functions the requests ran come
# first, those they spent the most instructions in (callgrind's own cost of each function)
# foremost, so a request's code shares few pages and cache lines; start-up's alone last.
nm --defined-only "$bin" | awk '$2 ~ /^[tTwW]$/ { print $3 }' | sort -u >"$work/defined"
python3 - "${stores[@]}" >"$work/ran" <<PY
import sys
work = "$work"
cost, stores = {}, {}
def read(record, store, count):
    fn, after_call = None, False
    for line in open(record, errors="replace"):
        if line.startswith("fn="):
            fn = line[3:].rstrip("\n")
            stores.setdefault(fn, set()).add(store)
            after_call = False
        elif line.startswith("calls="):
            after_call = True  # the next cost line is the call's, not this function's own
        elif line[:1].isdigit() and fn is not None:
            if count and not after_call:
                fields = line.split()
                cost[fn] = cost.get(fn, 0) + (int(fields[1]) if len(fields) > 1 else 0)
            after_call = False
for store in sys.argv[1:]:
    read(f"{work}/startup-{store}", store, False)
    read(f"{work}/callgrind-{store}", store, True)
for fn in sorted(stores, key=lambda f: (-len(stores[f]), f not in cost, -cost.get(f, 0), f)):
    print(fn)
PY
awk 'NR == FNR { defined[$0] = 1; next } defined[$0]' "$work/defined" "$work/ran" >"$work/order"
{
    echo "# Functions Concierge's start-up and benchmarked requests run, written by bench/layout.sh"
    echo "# ($(date -u +%Y-%m-%d), ${stores[*]}); build.rs hands this file to the linker. Regenerate, do not edit."
    cat "$work/order"
} >"$out"
bytes=$(nm --defined-only -S "$bin" | python3 -c 'import sys
keep = set(open(sys.argv[1]).read().split())
print(sum(int(f[1], 16) for f in (l.split() for l in sys.stdin) if len(f) == 4 and f[3] in keep))' "$work/order")
text=$(size -A "$bin" | awk '$1 == ".text" { print $2 }')
printf 'functions that ran: %s of them in the binary, %.1f MiB of its %.1f MiB of code; written to %s\n' \
    "$(wc -l <"$work/order")" "$(awk -v b="$bytes" 'BEGIN { print b / 1048576 }')" \
    "$(awk -v b="$text" 'BEGIN { print b / 1048576 }')" "${out#"$root"/}"
