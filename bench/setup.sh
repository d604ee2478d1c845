# Sourced by bench/run.sh, bench/soak.sh and bench/layout.sh: the build, the clients, resources
# and server settings every benchmark of Concierge starts from, so the three build and load the
# same server.

export CLIENT_ID=bench
export CLIENT_SECRET=bench-secret-0123456789abcdef0123456789abcdef
export PUBLIC_CLIENT_ID=bench-public
export RESOURCE=http://127.0.0.1:9999/mcp
export SCOPE=tools:read
TARGET=http://127.0.0.1:9998/notes

# build_release: the server as its users build it (`cargo build --release --bin concierge`, as
# README's `cargo run --release` and deploy/Containerfile do), then the fixture seeder by
# itself. Built in one command, the seeder's dev-dependencies unify the dependencies' features
# differently, and the server binary is not a user's: the names of its functions differ too,
# so bench/layout.sh wrote names a user's build mostly lacks, and bench/run.sh measured a
# binary nobody runs (bench/README.md, "Memory and size", 2026-12-04, late).
build_release() {
    cargo build --release --quiet --bin concierge
    cargo build --release --quiet --example bench_seed
}

json_field() { sed -nE "s/.*\"$1\":\"([^\"]+)\".*/\1/p"; }

# wait_for URL: until it answers (60 s at most)
wait_for() {
    for _ in $(seq 1 600); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing answered at $1" >&2
    return 1
}

# configure_ours BIN DATA_DIR DATABASE_URL: a new store with the benchmark's resource (and a
# second one to exchange tokens for), its confidential client (every grant the paths use) and
# its public client.
configure_ours() {
    local bin=$1 common=(--data-dir "$2" --database-url "$3")
    mkdir -p "$2"
    "$bin" "${common[@]}" --init resource add --uri "$RESOURCE" --name Bench \
        --scope "tools:read=Read" --scope "tools:write=Write" >/dev/null
    "$bin" "${common[@]}" resource add --uri "$TARGET" --name Notes --scope "notes:read=Read notes" >/dev/null
    "$bin" "${common[@]}" client add --name bench --id "$CLIENT_ID" --auth-method client_secret_post \
        --grant-type client_credentials --grant-type authorization_code --grant-type refresh_token \
        --grant-type urn:ietf:params:oauth:grant-type:token-exchange \
        --grant-type urn:ietf:params:oauth:grant-type:device_code \
        --grant-type urn:openid:params:grant-type:ciba \
        --redirect-uri http://127.0.0.1/callback --may-introspect --scope "tools:read tools:write" \
        --secret-from-env CLIENT_SECRET >/dev/null
    "$bin" "${common[@]}" client add --name "bench public" --id "$PUBLIC_CLIENT_ID" --auth-method none \
        --grant-type authorization_code --grant-type refresh_token \
        --redirect-uri http://127.0.0.1/callback --scope tools:read >/dev/null
    "$bin" "${common[@]}" resource allow-exchange --target "$TARGET" --client "$CLIENT_ID" \
        --from "$RESOURCE" --map tools:read=notes:read >/dev/null
}

# serve_ours BIN DATA_DIR DATABASE_URL PORT LOG [WRAPPER...]: start the server in the
# background (under WRAPPER, say a profiler, when given); the caller reads its PID from $!.
# Rate limits stay on (their cost is measured) but out of reach. Access tokens live an hour,
# not ten minutes: the tokens path_env fetches at start-up are introspected and exchanged for
# longer than that in a run or a soak, and an expired one is answered by other code (an
# inactive token, a refusal) than the one measured.
serve_ours() {
    local bin=$1 data=$2 url=$3 port=$4 log=$5
    shift 5
    CONCIERGE_TOKENS__ACCESS_TOKEN_TTL_SECS=3600 \
    CONCIERGE_RATE_LIMITS__TOKEN_PER_CLIENT=1000000000 CONCIERGE_RATE_LIMITS__TOKEN_PER_ADDRESS=1000000000 \
    CONCIERGE_REGISTRATION__RATE_LIMIT_MAX=1000000000 CONCIERGE_REGISTRATION__RATE_LIMIT_IDENTICAL_MAX=1000000000 \
    "$@" "$bin" --data-dir "$data" --database-url "$url" serve --listen "127.0.0.1:$port" \
        --issuer "http://127.0.0.1:$port" >"$log" 2>&1 &
}

# path_env BASE FIXTURES: what bench/paths.lua needs beside the fixture files, in PATH_ENV (for
# `env`): a refresh token and a machine token to introspect, a user's token (the last seeded
# code's) to exchange, the seeded user's session cookie. Spends the last seeded revocable
# token and code.
path_env() {
    local base=$1 fixtures=$2 machine subject code refresh
    machine=$(curl -fsS "$base/token" -d grant_type=client_credentials -d client_id=$CLIENT_ID \
        -d client_secret=$CLIENT_SECRET -d scope=tools:read --data-urlencode resource=$RESOURCE | json_field access_token)
    refresh=$(tail -n 1 "$fixtures/revoke.txt")
    sed -i '$d' "$fixtures/revoke.txt"
    code=$(tail -n 1 "$fixtures/codes.txt")
    sed -i '$d' "$fixtures/codes.txt"
    subject=$(curl -fsS "$base/token" -d grant_type=authorization_code -d client_id=$CLIENT_ID \
        -d client_secret=$CLIENT_SECRET -d code="$code" \
        -d code_verifier=bench-verifier-0123456789abcdefghijklmnopqrstuvwxyz \
        --data-urlencode redirect_uri=http://127.0.0.1/callback | json_field access_token)
    PATH_ENV=(ACCESS_TOKEN="$refresh" JWT="$machine" SUBJECT_TOKEN="$subject" TARGET="$TARGET"
        COOKIE="concierge_session=$(cat "$fixtures/cookie.txt")")
}

# new_store STORE NAME: a new empty database, its URL in STORE_URL: for sqlite a file NAME.db
# in $work, for postgres a database NAME on PG_ADMIN_URL, dropped by drop_stores.
created_databases=()
new_store() {
    case $1 in
        sqlite) STORE_URL="sqlite://$work/$2.db" ;;
        postgres)
            psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE \"$2\"" >/dev/null
            created_databases+=("$2")
            STORE_URL=$(sed -E "s#/[^/]*\$#/$2#" <<<"$PG_ADMIN_URL") ;;
        *) echo "a store is sqlite or postgres, not $1" >&2; return 2 ;;
    esac
}
drop_stores() {
    local db
    for db in "${created_databases[@]}"; do
        psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
    done
}

# On exit: stop the processes in bench_pids, drop the databases new_store created, remove
# $work. A script that sources this file sets `trap cleanup EXIT` once $work exists.
bench_pids=()
cleanup() {
    local p
    for p in "${bench_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    drop_stores
    [ -n "${work:-}" ] && rm -rf "$work"
}
