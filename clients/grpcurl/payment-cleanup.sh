#!/usr/bin/env bash
# Seed: POST /background-jobs/payment-cleanup/run (cancel payments pending for more than 15 minutes).
# Triggers payment-cleanup/cleanup-abandoned-payments now and prints the run (JSON).
#
#   ./payment-cleanup.sh [IDEMPOTENCY_KEY]
#
# A repeated IDEMPOTENCY_KEY returns the run created the first time instead of a new one.
# Follow the run with: ./watch.sh RUN_ID
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

[ $# -le 1 ] || tm_usage "[IDEMPOTENCY_KEY]"
tm_trigger payment-cleanup/cleanup-abandoned-payments "${1:-}"
