#!/usr/bin/env bash
# Follows a run: prints its stored events (state changes, progress, log lines), then live ones,
# one JSON object per event, and ends when the run has ended.
#
#   ./watch.sh RUN_ID [AFTER_SEQ]
#
# AFTER_SEQ resumes after that event number (the "seq" of the last event you saw).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

[ $# -ge 1 ] && [ $# -le 2 ] && [ -n "$1" ] || tm_usage "RUN_ID [AFTER_SEQ]"
after=${2:-0}
[[ $after =~ ^[0-9]+$ ]] || tm_usage "RUN_ID [AFTER_SEQ]   (AFTER_SEQ must be a number, got '$after')"
tm_call WatchRun "{\"run_id\": $(tm_json_string "$1"), \"after_seq\": \"$after\"}"
