#!/usr/bin/env bash
# Seed: POST /background-jobs/analytics/daily-report (generate today's analytics report).
# Triggers analytics/generate-daily-analytics now and prints the run (JSON).
#
#   ./daily-report.sh [IDEMPOTENCY_KEY]
#
# A repeated IDEMPOTENCY_KEY returns the run created the first time instead of a new one.
# Follow the run with: ./watch.sh RUN_ID
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

[ $# -le 1 ] || tm_usage "[IDEMPOTENCY_KEY]"
tm_trigger analytics/generate-daily-analytics "${1:-}"
