#!/usr/bin/env bash
# E-mail delivery benchmark: the executor's outbox → SMTP path vs postfix smtp-source.
#
#   bench/mail.sh                 # 2000 messages, SQLite outbox, release build
#   bench/mail.sh -n 5000         # more messages
#   bench/mail.sh --pad 20000     # bigger messages (bytes of extra text)
#   bench/mail.sh --postgres postgres://postgres@127.0.0.1:5432/postgres   # Postgres outbox
#                                 # (then also 20 single-row pickup-delay probes, --probes N)
#   PROFILE=debug bench/mail.sh   # use target/debug (no release build)
#
# Both senders deliver the same number of messages of the same size into one postfix smtp-sink
# on 127.0.0.1 and a table of messages per second is printed (see bench/mail_bench.py).
# Installs postfix (for smtp-source / smtp-sink) with apt-get when missing and leaves no postfix
# daemon running. Every process it starts is stopped by pid when it ends.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
profile="${PROFILE:-release}"
export PATH="$PATH:/usr/sbin:/sbin"

# --- postfix tools -------------------------------------------------------------------------
if ! command -v smtp-source >/dev/null || ! command -v smtp-sink >/dev/null; then
    echo "installing postfix (smtp-source, smtp-sink)..." >&2
    master_before=""
    [ -f /var/spool/postfix/pid/master.pid ] && master_before="$(cat /var/spool/postfix/pid/master.pid 2>/dev/null || true)"
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    # No questions, and no daemon start from the package scripts where policy-rc.d allows that.
    echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections 2>/dev/null || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q postfix >&2 \
        || { $sudo apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q postfix >&2; }
    # If the install started a postfix master that was not running before, stop it.
    if [ -z "$master_before" ] && $sudo postfix status >/dev/null 2>&1; then
        echo "stopping the postfix daemon started by the package install" >&2
        $sudo postfix stop >&2 || true
    fi
fi
for tool in smtp-source smtp-sink python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

# --- executor binary -----------------------------------------------------------------------
if [ "$profile" = release ]; then
    (cd "$root" && cargo build --release -q -p ticketmax-executor) >&2
else
    (cd "$root" && cargo build -q -p ticketmax-executor) >&2
fi
executor="${CARGO_TARGET_DIR:-$root/target}/$profile/ticketmax-executor"

echo "executor: $executor ($profile build)" >&2
exec python3 "$here/mail_bench.py" --executor "$executor" "$@"
