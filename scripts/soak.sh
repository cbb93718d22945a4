#!/usr/bin/env bash
# Soak test of issue 5: 3 control-plane replicas, 3 executors, every catalog job (32) on an
# every-second schedule, random SIGKILLs and restarts of replicas and executors; then every job is
# paused, the queue drains and the control-plane database is audited (ticks expected, run,
# skipped, missed, doubled). Exits non-zero unless missed and doubled are 0.
#
#   ./scripts/soak.sh                    # 120 s of chaos
#   ./scripts/soak.sh --seconds 60       # shorter
#   ./scripts/soak.sh --seed 42          # reproduce a chaos sequence
#
# Postgres: the server named by TICKETMAX_TEST_DATABASE_URL (e.g.
# postgres://postgres@127.0.0.1:5432/postgres; the soak creates and drops its own databases on
# it) when set; otherwise a throwaway cluster on a free loopback port in a temporary directory,
# stopped on exit (the same approach as scripts/test.sh). Everything listens on 127.0.0.1.
# Process logs: target/e2e-logs/soak/ (or $TICKETMAX_BIN_DIR/../e2e-logs/soak/).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[soak.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

SOAK_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds|--seed)
            [ $# -ge 2 ] || die "$1 needs a value"
            SOAK_ARGS+=("$1" "$2"); shift 2 ;;
        --seconds=*) SOAK_ARGS+=("--seconds" "${1#--seconds=}"); shift ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument $1 (try --help)" ;;
    esac
done

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi
}

# ---------------------------------------------------------------------------------------------
# Postgres (as scripts/test.sh)
# ---------------------------------------------------------------------------------------------
PG_TMP=""
PG_BIN=""
PG_RUN=()

stop_postgres() {
    if [ -n "$PG_TMP" ] && [ -d "$PG_TMP" ]; then
        if [ -f "$PG_TMP/data/postmaster.pid" ]; then
            "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m immediate -w stop >/dev/null 2>&1 || true
        fi
        rm -rf "$PG_TMP"
    fi
}
trap stop_postgres EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

find_pg_bin() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
            echo "$d"; return 0
        fi
    done
    if command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"; return 0
    fi
    return 1
}

free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        # No python: a random high port that nothing listens on.
        local p
        for _ in $(seq 50); do
            p=$((20000 + RANDOM % 40000))
            (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return 0; }
        done
        die "no free port found"
    fi
}

start_postgres() {
    if ! PG_BIN=$(find_pg_bin); then
        command -v apt-get >/dev/null || die "no Postgres binaries and no apt-get: install postgresql"
        log "apt-get install postgresql"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >&2
        PG_BIN=$(find_pg_bin) || die "no Postgres binaries after installing postgresql"
    fi
    PG_TMP=$(mktemp -d "${TMPDIR:-/tmp}/ticketmax-soak-pg.XXXXXX")
    chmod 755 "$PG_TMP"
    if [ "$(id -u)" = 0 ]; then
        id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
        chown postgres: "$PG_TMP"
        PG_RUN=(runuser -u postgres --)
    else
        PG_RUN=(env)
    fi
    local port
    port=$(free_port)
    log "starting a throwaway Postgres ($PG_BIN) on 127.0.0.1:$port in $PG_TMP"
    ( cd "$PG_TMP" && "${PG_RUN[@]}" "$PG_BIN/initdb" -D "$PG_TMP/data" -U postgres --auth=trust \
        --no-sync --encoding=UTF8 --locale=C >"$PG_TMP/initdb.log" 2>&1 ) \
        || { cat "$PG_TMP/initdb.log" >&2; die "initdb failed"; }
    ( cd "$PG_TMP" && "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/postgres.log" -w -t 60 \
        -o "-p $port -k $PG_TMP -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null ) \
        || { cat "$PG_TMP/postgres.log" >&2 || true; die "pg_ctl start failed"; }
    export TICKETMAX_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

if [ -n "${TICKETMAX_TEST_DATABASE_URL:-}" ]; then
    log "using the Postgres server of TICKETMAX_TEST_DATABASE_URL"
else
    start_postgres
fi
export TICKETMAX_TEST_DATABASE_URL

# ---------------------------------------------------------------------------------------------
# Build and soak
# ---------------------------------------------------------------------------------------------
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
if [ -z "${TICKETMAX_BIN_DIR:-}" ]; then
    log "cargo build --workspace --bins"
    cargo build --workspace --bins
    SOAK=target/debug/ticketmax-soak
else
    # Prebuilt product binaries (TICKETMAX_BIN_DIR); the soak driver is built here.
    log "cargo build -p ticketmax-e2e --bin ticketmax-soak (product binaries from $TICKETMAX_BIN_DIR)"
    cargo build -p ticketmax-e2e --bin ticketmax-soak
    SOAK=target/debug/ticketmax-soak
fi
[ -n "${CARGO_TARGET_DIR:-}" ] && SOAK="$CARGO_TARGET_DIR/debug/ticketmax-soak"

# Not exec: the EXIT trap stops the throwaway Postgres afterwards.
rc=0
"$SOAK" "${SOAK_ARGS[@]}" || rc=$?
exit $rc
