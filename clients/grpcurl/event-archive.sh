#!/usr/bin/env bash
# Seed: POST /background-jobs/event-management/archive (archive events completed more than 7 days ago).
# Triggers event-management/archive-past-events now and prints the run (JSON).
#
#   ./event-archive.sh [IDEMPOTENCY_KEY]
#
# A repeated IDEMPOTENCY_KEY returns the run created the first time instead of a new one.
# Follow the run with: ./watch.sh RUN_ID
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

[ $# -le 1 ] || tm_usage "[IDEMPOTENCY_KEY]"
tm_trigger event-management/archive-past-events "${1:-}"
