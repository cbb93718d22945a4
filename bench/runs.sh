#!/usr/bin/env bash
# Run-engine benchmark: one control plane and one executor (release builds) on Postgres, and
# in the same run the pgbench floor of the same machine. Prints one table: runs per second
# beside the floor, transactions per run, tick lateness, idle transactions, memory.
#
#   bench/runs.sh                              # 2000 runs at 32 in flight, 40 s of ticks
#   BENCH_RUNS=5000 BENCH_CONCURRENCY=64 bench/runs.sh
#   TICKETMAX_BENCH_DATABASE_URL=postgres://user@host:5432/postgres bench/runs.sh
#   BENCH_BIN_DIR=/path/to/other/release bench/runs.sh   # measure other binaries (before/after)
#   BENCH_SKIP_BUILD=1 bench/runs.sh                      # use the release binaries as built
#   BENCH_RUST_LOG=info BENCH_KEEP=1 bench/runs.sh         # log level of both processes; keep their logs
#
# The floor: pgbench with 8 clients running an INSERT and an UPDATE of one row as two
# autocommit statements (two commits, the least a run can cost: created, then finished).
# Progress goes to stderr, the table to stdout. Databases are created and dropped here.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
log() { printf '[runs.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
source "$ROOT/scripts/lib/postgres.sh"

SERVER="${TICKETMAX_BENCH_DATABASE_URL:-${TICKETMAX_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}"
BASE="${SERVER%/*}"
command -v psql >/dev/null || apt_install postgresql-client
command -v pgbench >/dev/null || [ -x /usr/lib/postgresql/15/bin/pgbench ] || apt_install postgresql-contrib
PGBENCH=$(command -v pgbench || echo /usr/lib/postgresql/15/bin/pgbench)

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
    log "building release binaries..."
    cargo build --quiet --release -p ticketmax-control-plane -p ticketmax-executor
    cargo build --quiet --release -p ticketmax-e2e --bin ticketmax-bench-runs
fi
BIN="${BENCH_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}"
CLIENT="${CARGO_TARGET_DIR:-target}/release/ticketmax-bench-runs"

CP_DB=tm_bench_runs_cp
TK_DB=tm_bench_runs_tk
FLOOR_DB=tm_bench_runs_floor
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ticketmax-bench-runs.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for db in $CP_DB $TK_DB $FLOOR_DB; do
        psql -q "$SERVER" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
    if [ -n "${BENCH_KEEP:-}" ]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
for db in $CP_DB $TK_DB $FLOOR_DB; do
    psql -q "$SERVER" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
    psql -q "$SERVER" -c "CREATE DATABASE $db" >/dev/null
done

log "pgbench floor: INSERT + UPDATE, autocommit, 8 clients, 10 s..."
psql -q "$BASE/$FLOOR_DB" -c "CREATE TABLE floor_runs (id bigserial PRIMARY KEY, state text NOT NULL, at timestamptz NOT NULL DEFAULT now())"
cat > "$WORK/floor.sql" <<'SQL'
INSERT INTO floor_runs (state) VALUES ('queued') RETURNING id \gset
UPDATE floor_runs SET state = 'succeeded' WHERE id = :id;
SQL
FLOOR_TPS=$("$PGBENCH" -n -c 8 -j 2 -T 10 -f "$WORK/floor.sql" "$BASE/$FLOOR_DB" 2>/dev/null \
    | awk '/^tps = / { print $3; exit }')
[ -n "$FLOOR_TPS" ] || die "pgbench printed no tps"
log "floor: $FLOOR_TPS tps"

GRPC=$(free_port); HTTP=$(free_port); EXEC=$(free_port)
log "starting the control plane and the executor..."
RUST_LOG="${BENCH_RUST_LOG:-warn}" DATABASE_URL="$BASE/$CP_DB" TICKETMAX_GRPC_ADDR="127.0.0.1:$GRPC" \
    TICKETMAX_HTTP_ADDR="127.0.0.1:$HTTP" TICKETMAX_DATA_DIR="$WORK/cp" \
    "$BIN/ticketmax-control-plane" > "$WORK/cp.log" 2>&1 &
CP_PID=$!; PIDS+=("$CP_PID")
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$GRPC") 2>/dev/null && break
    sleep 0.2
done
RUST_LOG="${BENCH_RUST_LOG:-warn}" TICKETING_DATABASE_URL="$BASE/$TK_DB" TICKETMAX_EXECUTOR_ADDR="127.0.0.1:$EXEC" \
    TICKETMAX_CONTROL_PLANE_URL="http://127.0.0.1:$GRPC" TICKETMAX_DATA_DIR="$WORK/ex" \
    TICKETMAX_EXECUTOR_ID=bench-executor \
    "$BIN/ticketmax-executor" > "$WORK/ex.log" 2>&1 &
EX_PID=$!; PIDS+=("$EX_PID")

BENCH_CP_URL="http://127.0.0.1:$GRPC" BENCH_CP_DB="$BASE/$CP_DB" BENCH_TK_DB="$BASE/$TK_DB" \
BENCH_CP_PID=$CP_PID BENCH_EX_PID=$EX_PID BENCH_FLOOR_TPS=$FLOOR_TPS \
    "$CLIENT" || { tail -n 30 "$WORK/cp.log" "$WORK/ex.log" >&2; die "the load client failed"; }
echo
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); Postgres $(psql -tA "$SERVER" -c 'SHOW server_version')"
