#!/usr/bin/env bash
# Seed: POST /background-jobs/data-cleanup/temp-files (delete temp uploads older than 1 day).
# Triggers data-cleanup/clean-temporary-files now and prints the run (JSON).
#
#   ./temp-files.sh [IDEMPOTENCY_KEY]
#
# A repeated IDEMPOTENCY_KEY returns the run created the first time instead of a new one.
# Follow the run with: ./watch.sh RUN_ID
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

[ $# -le 1 ] || tm_usage "[IDEMPOTENCY_KEY]"
tm_trigger data-cleanup/clean-temporary-files "${1:-}"
