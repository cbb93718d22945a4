//! `seed-demo`: deterministic demo data for the embedded default and for manual checks.
//!
//! The same `--seed` and sizes give the same rows; times are relative to "now", so every job has
//! work the moment the data is loaded: bookings pending for 11+ minutes, stale payments, refund
//! requests in all three policy windows, events at every lifecycle stage, birthdays today and on
//! 29 February, expired cache entries, and old temporary, log and document files.
use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use anyhow::Context;
use chrono::{DateTime, Datelike, Duration, DurationRound, NaiveDate, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, TransactionTrait, Value};

use crate::config::{Dirs, SeedArgs};
use crate::db::{Dialect, Sql, col};

/// splitmix64: tiny, fast and reproducible across platforms.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + (self.next() % ((hi - lo + 1) as u64)) as i64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const FIRST: &[&str] = &[
    "Ada", "Bola", "Chidi", "Dayo", "Emeka", "Funke", "Gbenga", "Halima", "Ifeoma", "Jide", "Kemi",
    "Lola", "Musa", "Ngozi", "Ola", "Tunde", "Uche", "Yemi", "Zainab", "Amara",
];
const LAST: &[&str] = &[
    "Adeyemi", "Okafor", "Bello", "Eze", "Ibrahim", "Okonkwo", "Balogun", "Nwosu", "Lawal",
    "Afolabi",
];
const CATEGORIES: &[&str] = &["music", "tech", "sports", "comedy", "arts", "food"];
const VENUES: &[&str] = &[
    "Eko Convention Centre, Lagos",
    "Transcorp Hilton, Abuja",
    "Muri Okunola Park, Lagos",
    "Landmark Centre, Lagos",
    "Tafawa Balewa Square, Lagos",
];
const TITLES: &[&str] = &[
    "Afrobeats Night",
    "Tech Summit",
    "Comedy Jam",
    "Food Festival",
    "Art Fair",
    "Jazz Evening",
    "Startup Pitch Day",
    "Football Viewing Party",
    "Fashion Week",
    "Poetry Slam",
];

/// Rows of one table, inserted with multi-row INSERTs.
struct Rows {
    table: &'static str,
    columns: &'static [&'static str],
    rows: Vec<Vec<Value>>,
}

impl Rows {
    fn new(table: &'static str, columns: &'static [&'static str]) -> Self {
        Rows {
            table,
            columns,
            rows: Vec::new(),
        }
    }

    fn push(&mut self, row: Vec<Value>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    async fn insert(self, db: &impl ConnectionTrait, dialect: Dialect) -> anyhow::Result<()> {
        for chunk in self.rows.chunks(200) {
            let mut q = Sql::new(dialect);
            let values: Vec<String> = chunk
                .iter()
                .map(|row| format!("({})", q.bind_list(row.iter().cloned())))
                .collect();
            q.push(&format!(
                "INSERT INTO {} ({}) VALUES {}",
                self.table,
                self.columns.join(", "),
                values.join(", ")
            ));
            q.execute(db)
                .await
                .with_context(|| format!("inserting demo {}", self.table))?;
        }
        Ok(())
    }
}

fn t(v: DateTime<Utc>) -> Value {
    v.into()
}

fn opt_t(v: Option<DateTime<Utc>>) -> Value {
    v.into()
}

async fn max_id(db: &DatabaseConnection, dialect: Dialect, table: &str) -> anyhow::Result<i64> {
    let mut q = Sql::new(dialect);
    q.push(&format!(
        "SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM {table}"
    ));
    let row = q.fetch_one(db).await?.context("MAX(id) returned no row")?;
    Ok(col(&row, 0)?)
}

/// Status, start, end and completion time of a demo event.
type Stage = (
    &'static str,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

struct EventPlan {
    id: i64,
    starts_at: DateTime<Utc>,
    price: i64,
    currency: &'static str,
    total: i64,
    held: i64,
    cancelled: bool,
}

pub async fn run(db: &DatabaseConnection, dirs: &Dirs, args: &SeedArgs) -> anyhow::Result<()> {
    run_at(db, dirs, args, Utc::now()).await
}

/// [`run`] with the data placed around `now` instead of the wall clock (tests use a fixed one).
pub async fn run_at(
    db: &DatabaseConnection,
    dirs: &Dirs,
    args: &SeedArgs,
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<()> {
    let dialect = Dialect::of(db)?;
    let existing = max_id(db, dialect, "users").await?;
    if existing > 0 && !args.force {
        tracing::info!(
            "the ticketing database already has users; seed-demo does nothing (use --force to add more)"
        );
        return Ok(());
    }
    let now = now.duration_trunc(Duration::seconds(1)).unwrap_or(now);
    let mut rng = Rng(args.seed);
    let user_base = existing;
    let event_base = max_id(db, dialect, "events").await?;
    let booking_base = max_id(db, dialect, "bookings").await?;
    let payment_base = max_id(db, dialect, "payments").await?;
    let n_users = i64::from(args.users.max(10));
    let n_events = i64::from(args.events.max(8));
    // E-mails stay unique when --force adds a second batch.
    let batch_tag = if existing > 0 {
        format!(".{}", user_base)
    } else {
        String::new()
    };

    // ---- users
    let mut users = Rows::new(
        "users",
        &[
            "id",
            "email",
            "first_name",
            "last_name",
            "role",
            "email_verified",
            "date_of_birth",
            "newsletter_subscribed",
            "promotional_emails",
            "last_login_at",
            "last_activity_at",
            "created_at",
        ],
    );
    let today = now.date_naive();
    let mut organizers = Vec::new();
    let mut logins = Rows::new("login_events", &["user_id", "created_at"]);
    for i in 1..=n_users {
        let id = user_base + i;
        let role = if i == 1 {
            "admin"
        } else if i % 20 == 2 {
            organizers.push(id);
            "organizer"
        } else {
            "customer"
        };
        let birthday = if i % 50 == 3 {
            // Birthday today.
            NaiveDate::from_ymd_opt(
                rng.range(1970, 2004) as i32,
                today.month(),
                today.day().min(28),
            )
        } else if i % 97 == 4 {
            NaiveDate::from_ymd_opt(1992, 2, 29)
        } else {
            NaiveDate::from_ymd_opt(
                rng.range(1960, 2005) as i32,
                rng.range(1, 12) as u32,
                rng.range(1, 28) as u32,
            )
        };
        let created =
            now - Duration::days(rng.range(1, 400)) - Duration::minutes(rng.range(0, 1440));
        let last_login = if rng.chance(70) {
            Some(now - Duration::minutes(rng.range(5, 60 * 24 * 120)))
        } else {
            None
        };
        if let Some(at) = last_login
            && now - at < Duration::days(2)
        {
            logins.push(vec![id.into(), t(at)]);
        }
        users.push(vec![
            id.into(),
            format!("user{i}{batch_tag}@demo.ticketmax.local").into(),
            (*rng.pick(FIRST)).into(),
            (*rng.pick(LAST)).into(),
            role.into(),
            (i % 10 != 0).into(),
            birthday.into(),
            (i % 3 != 0).into(),
            (i % 4 != 0).into(),
            opt_t(last_login),
            opt_t(last_login),
            t(created),
        ]);
    }
    if organizers.is_empty() {
        organizers.push(user_base + 1);
    }

    // ---- events at every lifecycle stage
    let mut plans = Vec::new();
    let mut event_meta = Vec::new();
    for i in 1..=n_events {
        let id = event_base + i;
        let hour = Duration::hours(rng.range(10, 20));
        let midnight = |d: i64| {
            today
                .and_hms_opt(0, 0, 0)
                .map_or(now, |t| t.and_utc() + Duration::days(d))
        };
        let (status, starts_at, ends_at, completed_at): Stage = match i % 8 {
            // Over long ago: archivable.
            0 => {
                let s = midnight(-rng.range(10, 40)) + hour;
                (
                    "completed",
                    s,
                    Some(s + Duration::hours(3)),
                    Some(s + Duration::hours(4)),
                )
            }
            // Ended yesterday: follow-ups.
            1 => {
                let s = midnight(-1) + Duration::hours(14);
                (
                    "completed",
                    s,
                    Some(s + Duration::hours(3)),
                    Some(s + Duration::hours(3)),
                )
            }
            // Started an hour ago, still "upcoming": update-event-statuses makes it live.
            2 if i % 16 == 2 => ("upcoming", now - Duration::hours(1), None, None),
            // Later today: refunds requested now get 50 %.
            2 => ("upcoming", now + Duration::hours(6), None, None),
            // Tomorrow: reminders.
            3 => ("upcoming", midnight(1) + hour, None, None),
            // In a week: early-bird reminders.
            4 => ("upcoming", midnight(7) + hour, None, None),
            // In 3 days, under-sold: promotions.
            5 => ("upcoming", midnight(3) + hour, None, None),
            6 => ("upcoming", midnight(rng.range(14, 60)) + hour, None, None),
            // Cancelled by the organizer.
            _ => ("cancelled", midnight(rng.range(5, 30)) + hour, None, None),
        };
        let total = rng.range(5, 50) * 10;
        let currency = if i % 5 == 0 { "USD" } else { "NGN" };
        let price = if currency == "USD" {
            rng.range(10, 150) * 100
        } else {
            rng.range(20, 500) * 10_000
        };
        plans.push(EventPlan {
            id,
            starts_at,
            price,
            currency,
            total,
            held: 0,
            cancelled: status == "cancelled",
        });
        event_meta.push((status, ends_at, completed_at, i % 8 == 5));
    }

    // ---- bookings and payments
    let mut bookings = Rows::new(
        "bookings",
        &[
            "id",
            "user_id",
            "event_id",
            "quantity",
            "total_amount",
            "currency",
            "status",
            "created_at",
            "confirmed_at",
            "cancelled_at",
            "cancellation_reason",
            "confirmation_email_sent",
            "confirmation_email_sent_at",
            "refund_requested",
            "refund_requested_at",
            "refund_processed",
            "refund_processed_at",
            "refund_amount",
        ],
    );
    let mut payments = Rows::new(
        "payments",
        &[
            "id",
            "booking_id",
            "user_id",
            "amount",
            "currency",
            "status",
            "failure_reason",
            "created_at",
            "paid_at",
            "failed_at",
            "abandoned_at",
            "refunded_at",
        ],
    );
    // The last 10 % of users never book (re-engagement candidates).
    let bookers = (n_users * 9 / 10).max(1);
    let mut payment_id = payment_base;
    let mut pay = |payments: &mut Rows,
                   booking: i64,
                   user: i64,
                   amount: i64,
                   currency: &str,
                   status: &str,
                   created: DateTime<Utc>| {
        payment_id += 1;
        let settled = created + Duration::minutes(2);
        payments.push(vec![
            payment_id.into(),
            booking.into(),
            user.into(),
            amount.into(),
            currency.into(),
            status.into(),
            (if status == "failed" {
                Some("Card declined".to_owned())
            } else {
                None
            })
            .into(),
            t(created),
            opt_t(matches!(status, "success" | "refunded").then_some(settled)),
            opt_t((status == "failed").then_some(settled)),
            opt_t((status == "abandoned").then_some(created + Duration::minutes(20))),
            opt_t((status == "refunded").then_some(settled + Duration::days(1))),
        ]);
    };
    let mut per_status: HashMap<&str, u64> = HashMap::new();
    for i in 1..=i64::from(args.bookings) {
        let id = booking_base + i;
        let user = user_base + rng.range(1, bookers);
        let e = rng.range(0, plans.len() as i64 - 1) as usize;
        let undersold = event_meta[e].3;
        let plan = &mut plans[e];
        let quantity = rng.range(1, 4);
        let amount = plan.price * quantity;
        let upcoming = plan.starts_at > now;
        let kind = i % 20;
        // Bookings of past or cancelled events are settled; under-sold events get few bookings.
        let status = if plan.cancelled {
            if kind % 2 == 0 {
                "cancelled"
            } else {
                "refunded"
            }
        } else if !upcoming {
            if kind < 15 { "confirmed" } else { "cancelled" }
        } else {
            match kind {
                0 | 1 | 2 | 3 | 19 => "pending",
                12..=16 => "cancelled",
                17 => "refunded",
                _ => "confirmed",
            }
        };
        let holds = matches!(status, "pending" | "confirmed");
        if holds
            && (plan.held + quantity > plan.total
                || (undersold && plan.held + quantity > plan.total / 5))
        {
            continue;
        }
        if holds {
            plan.held += quantity;
        }
        *per_status.entry(status).or_default() += 1;
        let latest = if upcoming {
            now
        } else {
            plan.starts_at - Duration::hours(1)
        };
        let mut created = latest - Duration::minutes(rng.range(60, 60 * 24 * 45));
        let (mut confirmed_at, mut cancelled_at, mut reason) = (None, None, None);
        let (
            mut conf_sent,
            mut refund_req,
            mut refund_req_at,
            mut refund_done,
            mut refund_done_at,
            mut refund_amount,
        ) = (false, false, None, false, None, None);
        match status {
            "pending" => {
                created = match kind {
                    0 | 1 => now - Duration::minutes(rng.range(1, 9)),
                    2 => now - Duration::minutes(rng.range(11, 14)),
                    _ => now - Duration::minutes(rng.range(16, 180)),
                };
                match kind {
                    0 => pay(
                        &mut payments,
                        id,
                        user,
                        amount,
                        plan.currency,
                        "pending",
                        created + Duration::minutes(1),
                    ),
                    3 => pay(
                        &mut payments,
                        id,
                        user,
                        amount,
                        plan.currency,
                        "pending",
                        created,
                    ),
                    19 => pay(
                        &mut payments,
                        id,
                        user,
                        amount,
                        plan.currency,
                        "processing",
                        created,
                    ),
                    _ => {}
                }
            }
            "confirmed" => {
                confirmed_at = Some(created + Duration::minutes(3));
                conf_sent = kind != 18;
                pay(
                    &mut payments,
                    id,
                    user,
                    amount,
                    plan.currency,
                    "success",
                    created + Duration::minutes(1),
                );
            }
            "cancelled" => {
                let at = if kind == 15 {
                    now - Duration::days(rng.range(31, 90))
                } else {
                    created.max(now - Duration::days(20)) + Duration::minutes(15)
                };
                created = created.min(at - Duration::minutes(15));
                cancelled_at = Some(at);
                if kind == 16 {
                    // A refund request: made just now for an upcoming event (≥ 24 h or < 24 h
                    // ahead, depending on the event), or after a past event started (denied).
                    refund_req = true;
                    pay(
                        &mut payments,
                        id,
                        user,
                        amount,
                        plan.currency,
                        "success",
                        created + Duration::minutes(1),
                    );
                    let requested = if upcoming {
                        now - Duration::minutes(1)
                    } else {
                        plan.starts_at + Duration::hours(1)
                    };
                    cancelled_at = Some(requested);
                    refund_req_at = Some(requested);
                    reason = Some("Cancelled by customer".to_owned());
                } else {
                    reason =
                        Some("Booking expired: no successful payment within 10 minutes".to_owned());
                    pay(
                        &mut payments,
                        id,
                        user,
                        amount,
                        plan.currency,
                        if i % 2 == 0 { "failed" } else { "abandoned" },
                        created,
                    );
                }
            }
            _ => {
                // refunded
                cancelled_at = Some(created + Duration::days(1));
                reason = Some("Cancelled by customer".to_owned());
                refund_req = true;
                refund_req_at = cancelled_at;
                refund_done = true;
                refund_done_at = cancelled_at.map(|c| c + Duration::hours(2));
                refund_amount = Some(amount);
                pay(
                    &mut payments,
                    id,
                    user,
                    amount,
                    plan.currency,
                    "refunded",
                    created + Duration::minutes(1),
                );
            }
        }
        bookings.push(vec![
            id.into(),
            user.into(),
            plan.id.into(),
            quantity.into(),
            amount.into(),
            plan.currency.into(),
            status.into(),
            t(created),
            opt_t(confirmed_at),
            opt_t(cancelled_at),
            reason.into(),
            conf_sent.into(),
            opt_t(conf_sent.then_some(created + Duration::minutes(4))),
            refund_req.into(),
            opt_t(refund_req_at),
            refund_done.into(),
            opt_t(refund_done_at),
            refund_amount.into(),
        ]);
    }

    let mut events = Rows::new(
        "events",
        &[
            "id",
            "organizer_id",
            "title",
            "category",
            "venue",
            "starts_at",
            "ends_at",
            "total_tickets",
            "available_tickets",
            "price",
            "currency",
            "status",
            "archived",
            "completed_at",
            "created_at",
        ],
    );
    for (plan, (status, ends_at, completed_at, _)) in plans.iter().zip(&event_meta) {
        let i = plan.id - event_base;
        events.push(vec![
            plan.id.into(),
            (*rng.pick(&organizers)).into(),
            format!("{} #{i}", rng.pick(TITLES)).into(),
            (*rng.pick(CATEGORIES)).into(),
            (*rng.pick(VENUES)).into(),
            t(plan.starts_at),
            opt_t(*ends_at),
            plan.total.into(),
            (plan.total - plan.held).into(),
            plan.price.into(),
            plan.currency.into(),
            (*status).into(),
            false.into(),
            opt_t(*completed_at),
            t(plan.starts_at.min(now) - Duration::days(rng.range(20, 90))),
        ]);
    }

    let mut cache = Rows::new(
        "cache_entries",
        &["key", "value", "size_bytes", "expires_at"],
    );
    for i in 1..=40_i64 {
        let size = rng.range(100, 50_000);
        let expires = if i % 2 == 0 {
            now - Duration::minutes(rng.range(1, 600))
        } else {
            now + Duration::minutes(rng.range(1, 600))
        };
        cache.push(vec![
            format!("demo:{}{batch_tag}:{i}", args.seed).into(),
            "x".repeat(16).into(),
            size.into(),
            t(expires),
        ]);
    }

    let mut documents = Rows::new("documents", &["path", "created_at"]);
    let tag = format!("{}{batch_tag}", args.seed);
    let doc_files = seed_files(dirs, now, &mut documents, &tag).context("writing demo files")?;

    let txn = db.begin().await?;
    let counts = [
        ("users", users.rows.len()),
        ("events", events.rows.len()),
        ("bookings", bookings.rows.len()),
        ("payments", payments.rows.len()),
    ];
    users.insert(&txn, dialect).await?;
    events.insert(&txn, dialect).await?;
    bookings.insert(&txn, dialect).await?;
    payments.insert(&txn, dialect).await?;
    logins.insert(&txn, dialect).await?;
    cache.insert(&txn, dialect).await?;
    documents.insert(&txn, dialect).await?;
    if dialect == Dialect::Postgres {
        // Explicit ids do not advance identity sequences; later plain INSERTs must not collide.
        for table in ["users", "events", "bookings", "payments"] {
            txn.execute_unprepared(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                 (SELECT COALESCE(MAX(id), 1) FROM {table}))"
            ))
            .await?;
        }
    }
    txn.commit().await?;
    tracing::info!(
        users = counts[0].1, events = counts[1].1, bookings = counts[2].1, payments = counts[3].1,
        files = doc_files, by_status = ?per_status, seed = args.seed,
        "demo data seeded"
    );
    Ok(())
}

/// Writes temporary, log and document files with chosen ages; references half the old
/// documents from the `documents` table.
fn seed_files(
    dirs: &Dirs,
    now: DateTime<Utc>,
    documents: &mut Rows,
    seed: &str,
) -> std::io::Result<usize> {
    let mut written = 0;
    let mut file = |dir: &Path, name: String, age: Duration| -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(name);
        std::fs::write(&path, b"TicketMax demo file\n")?;
        let mtime: SystemTime = (now - age).into();
        std::fs::File::options()
            .write(true)
            .open(&path)?
            .set_modified(mtime)?;
        written += 1;
        Ok(())
    };
    for i in 0..10 {
        let age = if i % 2 == 0 {
            Duration::days(2)
        } else {
            Duration::minutes(30)
        };
        file(&dirs.uploads_tmp, format!("upload-{seed}-{i}.tmp"), age)?;
    }
    for i in 0..6 {
        let age = if i % 2 == 0 {
            Duration::days(40)
        } else {
            Duration::days(3)
        };
        file(&dirs.logs, format!("app-{seed}-{i}.log"), age)?;
    }
    file(&dirs.logs, format!("notes-{seed}.txt"), Duration::days(60))?;
    for i in 0..10 {
        let name = format!("ticket-{seed}-{i}.pdf");
        let age = if i < 8 {
            Duration::days(45)
        } else {
            Duration::days(2)
        };
        file(&dirs.documents, name.clone(), age)?;
        if i % 2 == 0 {
            documents.push(vec![name.into(), t(now - age)]);
        }
    }
    Ok(written)
}
