#!/usr/bin/env bash
# Dashboard page-time benchmark: a control-plane store on Postgres holding BENCH_RUNS runs
# (default 100,000) with BENCH_EVENTS_PER_RUN events each (default 10: 1,000,000 events), one
# control plane (release build, one operator token, signed in: every page reads its session
# from the database as in production), and every page fetched BENCH_REQUESTS times
# (default 50) one after another with curl. Prints p50 / p99 / max server-side time per page
# beside the floor measured in the same run: GET /healthz, an HTTP round trip that reads
# nothing from the database.
#
#   bench/dashboard.sh
#   BENCH_RUNS=20000 BENCH_REQUESTS=20 bench/dashboard.sh
#   BENCH_SKIP_BUILD=1 bench/dashboard.sh          # use target/release as built
#   TICKETMAX_BENCH_DATABASE_URL=postgres://user@host:5432/postgres bench/dashboard.sh
#
# Progress goes to stderr, the table to stdout. The database is created and dropped here.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
log() { printf '[dashboard.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
source "$ROOT/scripts/lib/postgres.sh"

SERVER="${TICKETMAX_BENCH_DATABASE_URL:-${TICKETMAX_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}"
BASE="${SERVER%/*}"
RUNS="${BENCH_RUNS:-100000}"
PER_RUN="${BENCH_EVENTS_PER_RUN:-10}"
REQUESTS="${BENCH_REQUESTS:-50}"
command -v psql >/dev/null || apt_install postgresql-client
command -v curl >/dev/null || apt_install curl

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
    log "building the release control plane..."
    cargo build --quiet --release -p ticketmax-control-plane
fi
BIN="${BENCH_BIN_DIR:-${CARGO_TARGET_DIR:-target}/release}/ticketmax-control-plane"
[ -x "$BIN" ] || die "$BIN not found (build it, or unset BENCH_SKIP_BUILD)"

DB=tm_bench_dashboard
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ticketmax-bench-dashboard.XXXXXX")
CP_PID=""
cleanup() {
    [ -n "$CP_PID" ] && kill "$CP_PID" 2>/dev/null && wait "$CP_PID" 2>/dev/null
    psql -q "$SERVER" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

psql -q "$SERVER" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
psql -q "$SERVER" -c "CREATE DATABASE $DB" >/dev/null
GRPC_PORT=$(free_port)
HTTP_PORT=$(free_port)
HTTP="http://127.0.0.1:$HTTP_PORT"

TOKEN="bench-operator-$(date +%s%N)"
TOKEN_HASH=$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)
start_cp() {
    TICKETMAX_API_TOKENS="bench:operator:$TOKEN_HASH" DATABASE_URL="$BASE/$DB" TICKETMAX_GRPC_ADDR="127.0.0.1:$GRPC_PORT" \
        TICKETMAX_HTTP_ADDR="127.0.0.1:$HTTP_PORT" TICKETMAX_DATA_DIR="$WORK/data" \
        RUST_LOG=warn "$BIN" >>"$WORK/cp.log" 2>&1 &
    CP_PID=$!
    for _ in $(seq 300); do
        curl -fs "$HTTP/healthz" >/dev/null 2>&1 && return 0
        kill -0 "$CP_PID" 2>/dev/null || { cat "$WORK/cp.log" >&2; die "the control plane exited"; }
        sleep 0.1
    done
    die "the control plane did not become healthy"
}

log "migrating the store (first start)..."
start_cp
kill "$CP_PID"; wait "$CP_PID" 2>/dev/null || true; CP_PID=""

log "seeding $RUNS runs and $((RUNS * PER_RUN)) events..."
# Runs a tick apart across the 32 jobs, ids shaped like the control plane's (UUIDv7: the time
# first, so id order is time order); one in 50 failed, one in 7 skipped, the others succeeded.
# Each has PER_RUN events: queued, running, progress lines, the end.
psql -q "$BASE/$DB" -v ON_ERROR_STOP=1 >/dev/null <<SQL
SET synchronous_commit = off;
WITH names AS (SELECT array_agg(name ORDER BY name) AS a, count(*) AS n FROM jobs),
g AS (
  SELECT i, timestamptz '2026-01-01 00:00:00+00' + i * interval '1 minute' AS t FROM generate_series(1, $RUNS) i
)
INSERT INTO runs (id, job, state, trigger, scheduled_for, tick_at, attempt, not_before, created_at,
                  started_at, finished_at, updated_at, summary, error, reason, last_seq)
SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-7000-8000-' || lpad(to_hex(g.i), 12, '0'),
       names.a[1 + g.i % names.n],
       CASE WHEN g.i % 50 = 0 THEN 'failed' WHEN g.i % 7 = 0 THEN 'skipped' ELSE 'succeeded' END,
       'schedule', g.t, g.t, 1, g.t, g.t, g.t, g.t + interval '2 seconds', g.t + interval '2 seconds',
       '{"cancelled": 3, "tickets_released": 5}',
       CASE WHEN g.i % 50 = 0 THEN 'database unavailable: connection refused' END,
       CASE WHEN g.i % 7 = 0 AND g.i % 50 <> 0 THEN 'overlap skip: another run is active' END,
       $PER_RUN
FROM g, names, LATERAL (SELECT lpad(to_hex((extract(epoch FROM g.t) * 1000)::bigint), 12, '0') AS h) hx;
INSERT INTO run_events (run_id, seq, at, kind, payload)
SELECT r.id, s, r.created_at + s * interval '100 milliseconds',
       CASE WHEN s IN (1, 2, $PER_RUN) THEN 'state' ELSE 'progress' END,
       CASE WHEN s = 1 THEN '{"state":"queued","attempt":1,"message":"tick"}'
            WHEN s = 2 THEN '{"state":"running","attempt":1,"message":"on ex-1"}'
            WHEN s = $PER_RUN THEN '{"state":"' || r.state || '","attempt":1,"message":""}'
            ELSE '{"done":' || (s * 10) || ',"total":100,"message":"chunk"}' END
FROM runs r, generate_series(1, $PER_RUN) s
WHERE r.id LIKE '%-7000-8000-%';
ANALYZE;
SQL
start_cp

JOB=$(psql -qtA "$BASE/$DB" -c "SELECT name FROM jobs ORDER BY name OFFSET 4 LIMIT 1")
RUN=$(psql -qtA "$BASE/$DB" -c "SELECT id FROM runs WHERE job = '$JOB' ORDER BY id DESC OFFSET 10 LIMIT 1")
COOKIE=$(curl -fs -o /dev/null -D - --data-urlencode "token=$TOKEN" --data "next=/" "$HTTP/login" \
    | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: \(tm_session=[^;]*\).*/\1/p' | head -n1)
[ -n "$COOKIE" ] || die "signing in failed"
NEXT=$(curl -fs -b "$COOKIE" "$HTTP/runs" | grep -o 'href="/runs?page=[^"]*"' | head -n1 | sed 's/^href="//; s/"$//; s/&amp;/\&/g')
[ -n "$NEXT" ] || die "no second page link on /runs"
log "runs: $(psql -qtA "$BASE/$DB" -c 'SELECT count(*) FROM runs'), events: $(psql -qtA "$BASE/$DB" -c 'SELECT count(*) FROM run_events')"

# p50 p99 max (ms) of REQUESTS fetches of a path, after one warm-up fetch.
measure() {
    local path=$1
    curl -fs -o /dev/null -b "$COOKIE" "$HTTP$path" || die "GET $path failed"
    for _ in $(seq "$REQUESTS"); do
        curl -s -o /dev/null -b "$COOKIE" -w '%{time_total}\n' "$HTTP$path"
    done | sort -n | awk '{ v[NR] = $1 * 1000 } END {
        p50 = v[int((NR + 1) * 0.50)]; p99 = v[int((NR - 1) * 0.99) + 1];
        printf "%.1f %.1f %.1f\n", p50, p99, v[NR] }'
}

read -r F50 F99 FMAX < <(measure /healthz)
printf '%-40s %9s %9s %9s %12s\n' "page ($RUNS runs, $((RUNS * PER_RUN)) events)" "p50 ms" "p99 ms" "max ms" "p99 - floor"
printf '%-40s %9s %9s %9s %12s\n' "floor: GET /healthz" "$F50" "$F99" "$FMAX" "-"
for path in "/" "/runs" "/runs?state=failed" "/runs?job=$JOB" "$NEXT" \
            "/runs?trigger=manual" "/runs?trigger=manual&range=24h" "/runs/cancel-matching?job=$JOB" \
            "/jobs/$JOB" \
            "/runs/$RUN" "/runs/$RUN/events" "/reports"; do
    read -r P50 P99 PMAX < <(measure "$path")
    label=$path
    [ "$path" = "$NEXT" ] && label="/runs (second page)"
    printf '%-40s %9s %9s %9s %12s\n' "$label" "$P50" "$P99" "$PMAX" \
        "$(awk -v a="$P99" -v b="$F99" 'BEGIN { printf "%.1f", a - b }')"
done
printf 'load average: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
