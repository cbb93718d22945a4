#!/usr/bin/env bash
# Runs TicketMax Jobs on this machine with nothing else installed: a control plane and an
# executor on SQLite files in $TICKETMAX_DATA_DIR (default ./.ticketmax), demo ticketing data,
# and e-mail written as .eml files to $TICKETMAX_DATA_DIR/mail. Ctrl-C stops both.
#
#   ./scripts/run-embedded.sh              # build (debug), seed demo data once, run
#   TICKETMAX_GRPC_ADDR=127.0.0.1:6000 ./scripts/run-embedded.sh
#   ./scripts/run-embedded.sh --reset      # throw the data dir away first
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export TICKETMAX_DATA_DIR=${TICKETMAX_DATA_DIR:-$PWD/.ticketmax}
export TICKETMAX_GRPC_ADDR=${TICKETMAX_GRPC_ADDR:-127.0.0.1:50051}
export TICKETMAX_HTTP_ADDR=${TICKETMAX_HTTP_ADDR:-127.0.0.1:8080}
export TICKETMAX_EXECUTOR_ADDR=${TICKETMAX_EXECUTOR_ADDR:-127.0.0.1:50061}
export TICKETMAX_CONTROL_PLANE_URL=${TICKETMAX_CONTROL_PLANE_URL:-http://$TICKETMAX_GRPC_ADDR}
# Newsletter and marketing jobs need a secret for their signed unsubscribe links; this one is
# for the local demo only.
export TICKETMAX_UNSUBSCRIBE_SECRET=${TICKETMAX_UNSUBSCRIBE_SECRET:-embedded-demo-unsubscribe-secret-not-for-production}
unset DATABASE_URL TICKETING_DATABASE_URL SMTP_HOST

log() { printf '[run-embedded] %s\n' "$*" >&2; }

if [ "${1:-}" = "--reset" ]; then
    log "removing $TICKETMAX_DATA_DIR"
    rm -rf "$TICKETMAX_DATA_DIR"
fi
mkdir -p "$TICKETMAX_DATA_DIR"

if ! command -v cargo >/dev/null; then
    log "cargo not found: install Rust (rustup) first"; exit 1
fi
log "building ticketmax-control-plane and ticketmax-executor (first build takes a few minutes)"
cargo build --quiet -p ticketmax-control-plane -p ticketmax-executor -p ticketmax-client --bins
BIN=${CARGO_TARGET_DIR:-$PWD/target}/debug

if [ ! -f "$TICKETMAX_DATA_DIR/.demo-seeded" ]; then
    log "creating the ticketing schema and demo data in $TICKETMAX_DATA_DIR/ticketing.db"
    "$BIN/ticketmax-executor" migrate
    "$BIN/ticketmax-executor" seed-demo
    touch "$TICKETMAX_DATA_DIR/.demo-seeded"
fi

pids=()
stop() {
    log "stopping"
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait || true
}
trap stop INT TERM EXIT

"$BIN/ticketmax-control-plane" &
pids+=($!)
"$BIN/ticketmax-executor" &
pids+=($!)

host=${TICKETMAX_GRPC_ADDR%:*}; port=${TICKETMAX_GRPC_ADDR##*:}
for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then break; fi
    sleep 0.2
done

cat >&2 <<TXT

  TicketMax Jobs is running (embedded default: SQLite, demo data, mail as .eml files).

    control plane gRPC  $TICKETMAX_GRPC_ADDR   (reflection on: no .proto files needed)
    control plane HTTP  http://$TICKETMAX_HTTP_ADDR   (GET /background-jobs/status, /metrics)
    executor gRPC       $TICKETMAX_EXECUTOR_ADDR
    data dir            $TICKETMAX_DATA_DIR   (mail in $TICKETMAX_DATA_DIR/mail)

  Try:
    grpcurl -plaintext $TICKETMAX_GRPC_ADDR ticketmax.jobs.v1.JobService/GetStatus
    grpcurl -plaintext -d '{"job":"booking-cleanup/cancel-expired-bookings"}' $TICKETMAX_GRPC_ADDR ticketmax.jobs.v1.JobService/TriggerJob
    $BIN/ticketmaxctl trigger booking-cleanup/cancel-expired-bookings --wait

  Ctrl-C stops both processes.
TXT
wait -n "${pids[@]}" || true
