#!/usr/bin/env python3
"""Load driver of bench/mail.sh: the executor's e-mail delivery path against postfix smtp-source.

Both senders deliver N messages of the same size into the same local smtp-sink:

  executor    N pending rows are inserted into the outbox (email_outbox) of a fresh ticketing
              database in one transaction while the real `ticketmax-executor serve` binary runs
              with SMTP_HOST/SMTP_PORT pointing at the sink; timed until every row is `sent`.
              This is the whole production path: claim (lease) in batches, render the templates,
              build the MIME message, send over the pooled lettre SMTP transport, record `sent`.
  smtp-source postfix's load generator, same number of messages, same size, same number of
              parallel sessions as the executor's pool (4), connections reused (-d).

With --postgres, a pickup-delay probe follows on the same executor: single rows inserted one at
a time (each its own transaction, from this script's connection, not the executor's), each timed
from the row's created_at (its INSERT's transaction time) to its claim (next_attempt_at minus
the lease) and to its sent_at, all stamped on this machine's clock. That is the delay of the
LISTEN/NOTIFY wake-up (docs/email.md, "Delivery"); without it the sender would only claim on its
fallback poll, TICKETMAX_MAIL_POLL_MS (2 s).

Loopback only. Every process started here is stopped here (by its own pid).
Only the Python standard library is used; Postgres is driven through `psql`.
"""
import argparse
import datetime as dt
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

SESSIONS = 4  # the executor's SMTP pool size / delivery concurrency (executor/src/mail/mod.rs)
# The lease the executor gets (TICKETMAX_MAIL_LEASE_SECONDS): a claim sets next_attempt_at to the
# claim time plus this, which is how the probe reads the claim time back.
LEASE_S = 300
FROM = "noreply@ticketmax.local"
TO = "bench@example.test"

children = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.settimeout(2)
                if s.recv(64).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"{what} did not greet on port {port} within {timeout}s")


def spawn(args, log, env=None):
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=env, start_new_session=True)
    children.append(p)
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in children:
        children.remove(p)


def cleanup():
    for p in list(children):
        stop(p)


class Db:
    """The executor's ticketing database: SQLite file (default) or a fresh Postgres database."""

    def __init__(self, work, pg_server):
        self.pg_server = pg_server
        if pg_server:
            self.name = f"tm_mailbench_{os.getpid()}_{int(time.time())}"
            self.psql(pg_server, f"CREATE DATABASE {self.name}")
            base = pg_server.rsplit("/", 1)[0]
            self.url = f"{base}/{self.name}"
            self.label = "Postgres"
        else:
            self.path = os.path.join(work, "ticketing.db")
            self.url = f"sqlite://{self.path}?mode=rwc"
            self.label = "SQLite"

    @staticmethod
    def psql(url, sql):
        # The SQL goes through stdin: a 2000-row INSERT is longer than one argument may be.
        out = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", url],
                             input=sql, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"psql failed: {out.stderr}")
        return out.stdout.strip()

    def sql(self, sql):
        if self.pg_server:
            return self.psql(self.url, sql)
        con = sqlite3.connect(self.path, timeout=30)
        try:
            cur = con.execute(sql)
            rows = cur.fetchall()
            con.commit()
            return "\n".join("|".join("" if v is None else str(v) for v in r) for r in rows)
        finally:
            con.close()

    def insert(self, prefix, n, payload, subject):
        values = ",".join(
            f"('{prefix}:{i}', 'booking-confirmation', '{TO}', '{subject}', '{payload}')"
            for i in range(n))
        # One statement, one transaction; created_at / next_attempt_at default to now.
        self.sql("INSERT INTO email_outbox (dedupe_key, kind, recipient, subject, payload) "
                 f"VALUES {values}")

    def sent(self, prefix):
        return int(self.sql(f"SELECT count(*) FROM email_outbox WHERE status = 'sent' "
                            f"AND dedupe_key LIKE '{prefix}:%'") or 0)

    def failed(self, prefix):
        return int(self.sql(f"SELECT count(*) FROM email_outbox WHERE status = 'failed' "
                            f"AND dedupe_key LIKE '{prefix}:%'") or 0)

    def claimed(self, prefix):
        return int(self.sql(f"SELECT count(*) FROM email_outbox WHERE attempts > 0 "
                            f"AND dedupe_key LIKE '{prefix}:%'") or 0)

    def sent_span(self, prefix):
        """(first sent_at, last sent_at) as epoch seconds."""
        if self.pg_server:
            row = self.sql("SELECT extract(epoch FROM min(sent_at)), extract(epoch FROM max(sent_at)) "
                           f"FROM email_outbox WHERE dedupe_key LIKE '{prefix}:%'")
            a, b = row.split("|")
            return float(a), float(b)
        row = self.sql(f"SELECT min(sent_at), max(sent_at) FROM email_outbox "
                       f"WHERE dedupe_key LIKE '{prefix}:%'")
        a, b = row.split("|")
        return (dt.datetime.fromisoformat(a).timestamp(), dt.datetime.fromisoformat(b).timestamp())

    def drop(self):
        if self.pg_server:
            self.psql(self.pg_server, f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def payload(pad):
    starts = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=10)).isoformat()
    p = {"booking_id": 1, "first_name": "Ada", "last_name": "Lovelace", "event_id": 7,
         "event_title": "Afrobeats Night", "venue": "Eko Hotel" + (" " + "x" * pad if pad else ""),
         "starts_at": starts, "quantity": 2, "total_amount": 1234550, "currency": "NGN",
         "status": "confirmed", "cancellation_reason": None}
    return json.dumps(p).replace("'", "''")


def executor_env(work, db, smtp_port, data):
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("TICKETMAX_") or k.startswith("SMTP_") or k in (
               "TICKETING_DATABASE_URL", "DATABASE_URL", "ADMIN_EMAILS", "FRONTEND_URL"))}
    env.update({
        "RUST_LOG": "warn,ticketmax_executor=info",
        "TICKETING_DATABASE_URL": db.url,
        "TICKETMAX_DATA_DIR": data,
        "TICKETMAX_EXECUTOR_ADDR": f"127.0.0.1:{free_port()}",
        # No control plane: registration retries in the background, delivery does not need it.
        "TICKETMAX_CONTROL_PLANE_URL": f"http://127.0.0.1:{free_port()}",
        "TICKETMAX_EXECUTOR_ID": "mail-bench",
        "TICKETMAX_MAIL_LEASE_SECONDS": str(LEASE_S),
    })
    if smtp_port:
        env.update({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_port), "SMTP_SECURITY": "none"})
    return env


def wait_log(path, needle, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"executor exited ({proc.returncode}):\n" + open(path).read()[-3000:])
        if needle in open(path, errors="replace").read():
            return
        time.sleep(0.05)
    sys.exit(f"executor did not log {needle!r} within {timeout}s:\n" + open(path).read()[-3000:])


def message_size(args, work, pay, subject):
    """Size in bytes of the message the executor builds for this payload: one row delivered with
    the embedded default (.eml files), no SMTP involved."""
    data = os.path.join(work, "calibrate")
    os.makedirs(data)
    db = Db(data, None)
    log_path = os.path.join(work, "calibrate.log")
    with open(log_path, "w") as log:
        subprocess.run([args.executor, "migrate"], env=executor_env(work, db, None, data),
                       stdout=log, stderr=subprocess.STDOUT, check=True)
        db.insert("calibrate", 1, pay, subject)
        p = spawn([args.executor, "serve"], log, executor_env(work, db, None, data))
        deadline = time.time() + 30
        while db.sent("calibrate") < 1:
            if time.time() > deadline or p.poll() is not None:
                stop(p)
                sys.exit("calibration failed:\n" + open(log_path).read()[-3000:])
            time.sleep(0.05)
        stop(p)
    mail_dir = os.path.join(data, "mail")
    files = [f for f in os.listdir(mail_dir) if f.endswith(".eml")]
    return os.path.getsize(os.path.join(mail_dir, files[0]))


def run_executor(args, work, sink_port, pay, subject):
    data = os.path.join(work, "executor")
    os.makedirs(data)
    db = Db(data, args.postgres)
    log_path = os.path.join(work, "executor.log")
    try:
        with open(log_path, "w") as log:
            env = executor_env(work, db, sink_port, data)
            subprocess.run([args.executor, "migrate"], env=env, stdout=log,
                           stderr=subprocess.STDOUT, check=True)
            p = spawn([args.executor, "serve"], log, env)
            wait_log(log_path, "e-mail sender ready", p)
            # Warm-up: opens the pooled SMTP connections.
            db.insert("warmup", SESSIONS * 5, pay, subject)
            deadline = time.time() + 60
            while db.sent("warmup") < SESSIONS * 5:
                if time.time() > deadline or p.poll() is not None:
                    sys.exit("warm-up failed:\n" + open(log_path).read()[-3000:])
                time.sleep(0.05)
            t0 = time.time()
            db.insert("bench", args.n, pay, subject)
            t_inserted = time.time()
            deadline = t0 + args.timeout
            # The sender picks new rows up at once on Postgres (the insert's NOTIFY), on its next
            # idle poll (every 2 s) on SQLite: note when it does.
            while db.claimed("bench") == 0:
                if time.time() > deadline or p.poll() is not None:
                    sys.exit("the executor never claimed the rows:\n" + open(log_path).read()[-3000:])
                time.sleep(0.005)
            t_claimed = time.time()
            while True:
                sent = db.sent("bench")
                if sent >= args.n:
                    break
                if time.time() > deadline or p.poll() is not None:
                    stop(p)
                    sys.exit(f"only {sent}/{args.n} sent after {args.timeout}s "
                             f"({db.failed('bench')} failed):\n" + open(log_path).read()[-3000:])
                time.sleep(0.02)
            t_done = time.time()
            first, last = db.sent_span("bench")
            probe = probe_pickup(args, db, p, log_path, pay, subject) if args.postgres else None
            stop(p)
        return {
            "probe": probe,
            "label": f"executor ({db.label} outbox, SMTP pool {SESSIONS})",
            "wall": t_done - t0,
            "insert": t_inserted - t0,
            "span": last - first,
            "delivery": t_done - t_claimed,
        }
    finally:
        db.drop()


def probe_pickup(args, db, proc, log_path, pay, subject):
    """Pickup delays of single rows on the Postgres outbox: (claim ms, sent ms) per probe, each
    from the row's created_at, which is the start of its INSERT's transaction (one statement,
    autocommit), so the INSERT's own execution and commit are inside the figure."""
    delays = []
    for i in range(args.probes):
        prefix = f"probe{i}"
        db.insert(prefix, 1, pay, subject)
        deadline = time.time() + 30
        while True:
            row = db.sql("SELECT status, extract(epoch FROM created_at), "
                         "extract(epoch FROM next_attempt_at), extract(epoch FROM sent_at) "
                         f"FROM email_outbox WHERE dedupe_key = '{prefix}:0'")
            status, created, next_at, sent_at = row.split("|")
            if status == "sent":
                break
            if time.time() > deadline or proc.poll() is not None:
                sys.exit(f"probe row {prefix} not sent within 30 s (status {status}):\n"
                         + open(log_path).read()[-3000:])
            time.sleep(0.005)
        created = float(created)
        delays.append(((float(next_at) - LEASE_S - created) * 1000,
                       (float(sent_at) - created) * 1000))
        # Let the sender go idle again, so each probe measures a wake-up from the idle wait.
        time.sleep(0.1)
    return delays


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_smtp_source(args, sink_port, size):
    # -l: payload bytes (smtp-source adds ~200 bytes of its own headers, so the body is trimmed);
    # -s: parallel sessions; -d: keep the connection for the next message (pool-like); -N: unique
    # Message-IDs... not needed.
    body = max(size - 200, 1)
    cmd = [args.smtp_source, "-s", str(SESSIONS), "-d", "-m", str(args.n), "-l", str(body),
           "-f", FROM, "-t", TO, f"127.0.0.1:{sink_port}"]
    t0 = time.time()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    wall = time.time() - t0
    if out.returncode != 0:
        sys.exit(f"smtp-source failed ({out.returncode}): {out.stderr}")
    return {"label": f"postfix smtp-source (-s {SESSIONS} -d)", "wall": wall, "cmd": " ".join(cmd)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=2000, help="messages per sender (default 2000)")
    ap.add_argument("--pad", type=int, default=0, help="extra bytes in the message (venue text)")
    ap.add_argument("--executor", required=True, help="ticketmax-executor binary")
    ap.add_argument("--smtp-sink", default=shutil.which("smtp-sink") or "/usr/sbin/smtp-sink")
    ap.add_argument("--smtp-source", default=shutil.which("smtp-source") or "/usr/sbin/smtp-source")
    ap.add_argument("--postgres", metavar="SERVER_URL",
                    help="use a fresh database on this Postgres server (e.g. "
                         "postgres://postgres@127.0.0.1:5432/postgres) instead of SQLite")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per sender before giving up")
    ap.add_argument("--probes", type=int, default=20,
                    help="single-row pickup-delay probes after the run, Postgres only (default 20)")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="ticketmax-mail-bench-")
    try:
        subject = "Booking confirmed: Afrobeats Night"
        pay = payload(args.pad)
        size = message_size(args, work, pay, subject)

        sink_port = free_port()
        sink_log = open(os.path.join(work, "smtp-sink.log"), "w")
        # smtp-sink: accepts and discards; 256 = listen backlog. As root it must drop privileges.
        user = ["-u", "postfix"] if os.geteuid() == 0 else []
        sink = spawn([args.smtp_sink, *user, f"127.0.0.1:{sink_port}", "256"], sink_log)
        wait_port(sink_port, sink, "smtp-sink")

        ex = run_executor(args, work, sink_port, pay, subject)
        src = run_smtp_source(args, sink_port, size)
        stop(sink)

        n = args.n
        ex_rate = n / ex["wall"]
        ex_steady = n / ex["delivery"]
        src_rate = n / src["wall"]
        rows = [
            (ex["label"], f"{ex['wall']:.2f}", f"{ex_rate:,.0f}", f"{ex_steady:,.0f}"),
            (src["label"], f"{src['wall']:.2f}", f"{src_rate:,.0f}", "-"),
        ]
        print()
        print(f"{n} messages of ~{size} bytes each into postfix smtp-sink on 127.0.0.1 "
              f"({os.cpu_count()} CPUs)")
        print()
        header = ("sender", "wall s", "msg/s (wall)", "msg/s (claimed->all sent)")
        widths = [max(len(r[i]) for r in rows + [header]) for i in range(4)]
        fmt = "| " + " | ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths)) + " |"
        print(fmt.format(*header))
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for r in rows:
            print(fmt.format(*r))
        print()
        print(f"ratio executor / smtp-source: {ex_rate / src_rate:.2f} (wall), "
              f"{ex_steady / src_rate:.2f} (from the executor's first claim)")
        print(f"executor wall = one INSERT of {n} outbox rows ({ex['insert']:.2f} s) until the "
              f"last row is 'sent', including the wait until the sender claims them (its NOTIFY "
              f"wake-up on Postgres, up to the 2 s idle poll on SQLite); "
              f"claimed->all sent = {ex['delivery']:.2f} s from the first claimed row "
              f"(first->last sent_at: {ex['span']:.2f} s)")
        print(f"smtp-source: {src['cmd']}")
        if ex["probe"]:
            claims = [c for c, _ in ex["probe"]]
            sends = [s for _, s in ex["probe"]]
            load = " ".join(f"{x:.2f}" for x in os.getloadavg())
            print()
            print(f"pickup delay, Postgres outbox, {len(sends)} single-row INSERTs from another "
                  f"connection (load average {load}):")
            print(f"  INSERT -> claimed: p50 {percentile(claims, 0.5):.1f} ms, "
                  f"max {max(claims):.1f} ms")
            print(f"  INSERT -> sent:    p50 {percentile(sends, 0.5):.1f} ms, "
                  f"max {max(sends):.1f} ms")
    finally:
        cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        cleanup()
        raise
