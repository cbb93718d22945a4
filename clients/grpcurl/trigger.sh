#!/usr/bin/env bash
# Triggers any job now and prints the run (JSON).
#
#   ./trigger.sh JOB [IDEMPOTENCY_KEY]
#   ./trigger.sh analytics/generate-weekly-business-report
#   ./trigger.sh payment-cleanup/handle-payment-timeouts retry-2026-11-28
#
# JOB is "<service>/<task>" (./status.sh lists them). A repeated IDEMPOTENCY_KEY returns the run
# created the first time. An unknown job fails with NOT_FOUND (grpcurl exit code 69).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

[ $# -ge 1 ] && [ $# -le 2 ] && [ -n "$1" ] || tm_usage "JOB [IDEMPOTENCY_KEY]"
tm_trigger "$1" "${2:-}"
