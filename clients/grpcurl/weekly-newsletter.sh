#!/usr/bin/env bash
# Seed: POST /background-jobs/notifications/weekly-newsletter (send the weekly newsletter).
# Triggers notifications/send-weekly-newsletter now and prints the run (JSON).
#
#   ./weekly-newsletter.sh [IDEMPOTENCY_KEY]
#
# A repeated IDEMPOTENCY_KEY returns the run created the first time instead of a new one.
# Follow the run with: ./watch.sh RUN_ID
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

[ $# -le 1 ] || tm_usage "[IDEMPOTENCY_KEY]"
tm_trigger notifications/send-weekly-newsletter "${1:-}"
