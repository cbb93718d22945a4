#!/usr/bin/env bash
# Seed: POST /background-jobs/booking-cleanup/run (cancel bookings pending for more than 10 minutes).
# Triggers booking-cleanup/cancel-expired-bookings now and prints the run (JSON).
#
#   ./booking-cleanup.sh [IDEMPOTENCY_KEY]
#
# A repeated IDEMPOTENCY_KEY returns the run created the first time instead of a new one.
# Follow the run with: ./watch.sh RUN_ID
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

[ $# -le 1 ] || tm_usage "[IDEMPOTENCY_KEY]"
tm_trigger booking-cleanup/cancel-expired-bookings "${1:-}"
