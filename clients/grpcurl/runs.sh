#!/usr/bin/env bash
# Lists the newest runs (of one job, or of all jobs) as JSON, newest first.
#
#   ./runs.sh [JOB]
#   TICKETMAX_PAGE_SIZE=100 ./runs.sh booking-cleanup/cancel-expired-bookings
#
# TICKETMAX_PAGE_SIZE: how many runs (1..500, default 20); TICKETMAX_PAGE_TOKEN: the
# "nextPageToken" of a previous answer, for the next page.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

[ $# -le 1 ] || tm_usage "[JOB]"
size=${TICKETMAX_PAGE_SIZE:-20}
[[ $size =~ ^[0-9]+$ ]] || tm_usage "[JOB]   (TICKETMAX_PAGE_SIZE must be a number, got '$size')"
req="{\"page_size\": $size"
if [ -n "${1:-}" ]; then
    req+=", \"job\": $(tm_json_string "$1")"
fi
if [ -n "${TICKETMAX_PAGE_TOKEN:-}" ]; then
    req+=", \"page_token\": $(tm_json_string "$TICKETMAX_PAGE_TOKEN")"
fi
req+="}"
tm_call ListRuns "$req"
