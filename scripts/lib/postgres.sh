# shellcheck shell=bash
# A throwaway Postgres for scripts/test.sh and scripts/soak.sh, sourced by both.
#
#   source scripts/lib/postgres.sh
#   ensure_test_postgres ticketmax-pg   # exports TICKETMAX_TEST_DATABASE_URL
#
# Uses the server of TICKETMAX_TEST_DATABASE_URL when set. Otherwise it starts a cluster on a
# free loopback port in a temporary directory (apt-installing Postgres when no binaries are
# found), with durability off (tests do not need it), and stops and removes it when the
# calling script exits. The caller defines log() and die().

PG_TMP=""
PG_BIN=""
PG_RUN=()

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi
}

apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
    log "apt-get install $*"
    if [ -z "${APT_UPDATED:-}" ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
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

stop_postgres() {
    if [ -n "$PG_TMP" ] && [ -d "$PG_TMP" ]; then
        if [ -f "$PG_TMP/data/postmaster.pid" ]; then
            "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m immediate -w stop >/dev/null 2>&1 || true
        fi
        rm -rf "$PG_TMP"
    fi
}

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

# start_postgres NAME: a cluster in a temporary directory named after NAME.
start_postgres() {
    PG_BIN=$(find_pg_bin) || { apt_install postgresql; PG_BIN=$(find_pg_bin) || die "no Postgres binaries after installing postgresql"; }
    PG_TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    chmod 755 "$PG_TMP"
    if [ "$(id -u)" = 0 ]; then
        # initdb refuses to run as root: the cluster belongs to the postgres user.
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

# ensure_test_postgres NAME: TICKETMAX_TEST_DATABASE_URL's server, or a throwaway cluster that
# is stopped when the calling script exits (INT and TERM exit through that trap too).
ensure_test_postgres() {
    trap stop_postgres EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    if [ -n "${TICKETMAX_TEST_DATABASE_URL:-}" ]; then
        log "using the Postgres server of TICKETMAX_TEST_DATABASE_URL"
    else
        start_postgres "$1"
    fi
    export TICKETMAX_TEST_DATABASE_URL
}
