#!/usr/bin/env bash
# Seed: GET /background-jobs/status. Prints GetStatus as JSON: "status" ("active"), this
# replica's "role" (leader/follower), every job with schedule, enabled flag, nextFireTime and
# lastRun, and the connected executors.
#
#   ./status.sh
#   ./status.sh | jq -r '.jobs[] | [.name, .schedule, (.lastRun.state // "-")] | @tsv'
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

[ $# -eq 0 ] || tm_usage "(no arguments)"
tm_call GetStatus '{}'
