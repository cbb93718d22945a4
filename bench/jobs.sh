#!/usr/bin/env bash
# Bulk-job benchmark: 1,000,000 bookings on Postgres; each bulk job (the real
# executor Task) against ONE hand-written SQL statement doing the same writes on an identical
# copy of the data (the floor), with the ratio. Creates and drops its own databases.
#
#   bench/jobs.sh                                   # defaults below
#   TICKETMAX_BENCH_DATABASE_URL=postgres://user@host:5432/postgres bench/jobs.sh
#   BENCH_BOOKINGS=100000 BENCH_JOBS=cancel-expired-bookings,send-event-reminders bench/jobs.sh
#
# Progress goes to stderr, the table to stdout. The driver is executor/examples/bench_jobs.rs,
# built with the dev profile (dependencies at opt-level 1; the time is spent in Postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
export TICKETMAX_BENCH_DATABASE_URL="${TICKETMAX_BENCH_DATABASE_URL:-${TICKETMAX_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}"
export BENCH_BOOKINGS="${BENCH_BOOKINGS:-1000000}"
export RUST_LOG="${RUST_LOG:-warn}"
echo "building the benchmark driver..." >&2
cargo build --quiet -p ticketmax-executor --example bench_jobs ${BENCH_CARGO_FLAGS:-}
profile_dir=debug
case " ${BENCH_CARGO_FLAGS:-} " in *" --release "*) profile_dir=release ;; esac
exec "${CARGO_TARGET_DIR:-target}/$profile_dir/examples/bench_jobs"
