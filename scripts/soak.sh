#!/usr/bin/env bash
# Soak test (README, "Benchmarks and soak"): 3 control-plane replicas, 3 executors, every catalog job (32) on an
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

# ---------------------------------------------------------------------------------------------
# Postgres (scripts/lib/postgres.sh, shared with scripts/test.sh)
# ---------------------------------------------------------------------------------------------
source scripts/lib/postgres.sh
ensure_test_postgres ticketmax-soak-pg

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
