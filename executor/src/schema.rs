//! The ticketing schema (described in `executor/README.md`) as sea-orm migrations, for Postgres and SQLite.
//!
//! Other components' tests insert rows with plain SQL, so the column names of `executor/README.md` are kept exactly,
//! every id is an auto-incremented BIGINT, and every column that is not essential to a row has a
//! default. Money is BIGINT minor units; times are `timestamptz` on Postgres and RFC 3339 text on
//! SQLite (the executor binds every time from Rust, so both compare the same way). There are no
//! foreign keys on purpose: the jobs keep the invariants themselves and deleting old rows in
//! chunks must not cascade or fail on stray references.
use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateTicketingTables),
            Box::new(OutboxTraceParent),
            Box::new(OutboxLeaseToken),
            Box::new(PaymentRefundedAmount),
            Box::new(OutboxNotify),
            Box::new(ClaimIndexes),
        ]
    }

    // A table of its own, so the ticketing schema can share a database with other migrations.
    fn migration_table_name() -> DynIden {
        "ticketing_migrations".into_iden()
    }
}

struct CreateTicketingTables;

/// The W3C traceparent of the run that queued an e-mail, so its delivery joins the run's trace.
struct OutboxTraceParent;

impl MigrationName for OutboxTraceParent {
    fn name(&self) -> &str {
        "m20261128_000002_outbox_trace_parent"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for OutboxTraceParent {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE email_outbox ADD COLUMN trace_parent TEXT")
            .await
            .map(|_| ())
    }
}

/// The token of the sender's lease on an outbox row: a claim writes a fresh one, and the sender
/// records an outcome only where the row still holds its token.
struct OutboxLeaseToken;

impl MigrationName for OutboxLeaseToken {
    fn name(&self) -> &str {
        "m20261201_000003_outbox_lease_token"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for OutboxLeaseToken {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE email_outbox ADD COLUMN lease_token TEXT")
            .await
            .map(|_| ())
    }
}

/// Minor units of a payment returned to the customer: a partial refund leaves the payment a
/// `success` with this beside it (revenue counts `amount - refunded_amount`); a payment whose
/// whole amount was returned is `refunded`.
struct PaymentRefundedAmount;

impl MigrationName for PaymentRefundedAmount {
    fn name(&self) -> &str {
        "m20261201_000004_payment_refunded_amount"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for PaymentRefundedAmount {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "ALTER TABLE payments ADD COLUMN refunded_amount BIGINT NOT NULL DEFAULT 0",
        )
        .await?;
        // Payments refunded before this column existed were refunded in full.
        db.execute_unprepared(
            "UPDATE payments SET refunded_amount = amount WHERE status = 'refunded'",
        )
        .await
        .map(|_| ())
    }
}

/// Postgres only: a NOTIFY on [`crate::mail::pickup::CHANNEL`] after every INSERT into the
/// outbox, so a sender LISTENing there picks up rows written by another process at once instead
/// of on its next poll. Statement-level, so a bulk insert of many rows notifies once (and
/// Postgres folds identical notifications of one transaction into one); an `ON CONFLICT DO
/// NOTHING` that inserted nothing still notifies, which costs the sender one empty claim.
/// The notification is only a hint: delivery still claims rows through the lease, so a lost or
/// extra notification changes when a row is sent, never how often. SQLite has no NOTIFY; the
/// sender polls there.
struct OutboxNotify;

impl MigrationName for OutboxNotify {
    fn name(&self) -> &str {
        "m20261203_000005_outbox_notify"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for OutboxNotify {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            "CREATE OR REPLACE FUNCTION ticketmax_outbox_notify() RETURNS trigger \
             LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_notify('{}', ''); RETURN NULL; END $$",
            crate::mail::pickup::CHANNEL
        ))
        .await?;
        // DROP first: CREATE TRIGGER has no OR REPLACE before Postgres 14.
        db.execute_unprepared("DROP TRIGGER IF EXISTS ticketmax_outbox_notify ON email_outbox")
            .await?;
        db.execute_unprepared(
            "CREATE TRIGGER ticketmax_outbox_notify AFTER INSERT ON email_outbox \
             FOR EACH STATEMENT EXECUTE FUNCTION ticketmax_outbox_notify()",
        )
        .await
        .map(|_| ())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared("DROP TRIGGER IF EXISTS ticketmax_outbox_notify ON email_outbox")
            .await?;
        db.execute_unprepared("DROP FUNCTION IF EXISTS ticketmax_outbox_notify()")
            .await
            .map(|_| ())
    }
}

/// Partial indexes matching the claims of the chunked jobs, which pick `status = X AND id >
/// <last id handled> ORDER BY id LIMIT n`: an index holding only the rows of that status, in id
/// order, answers it as one range scan that stops after n matches, however few rows of the table
/// have the status. Without one, Postgres walks the primary key past every row of other
/// statuses (at 1M bookings: the clean-up's claim of 1,000 rows read 10,000 rows, 5 ms, against
/// 2,000 rows, 2 ms, with the index; a run is 100 chunks). Pending bookings and stale payments
/// are few in a live system, cancelled ones many: all three claims read only their own rows.
/// Postgres uses a partial index only where the query names the status as a literal, so the
/// claims write it so. SQLite has partial indexes too.
struct ClaimIndexes;

const CLAIM_INDEXES: &[(&str, &str, &str, &str)] = &[
    (
        "ix_bookings_pending_id",
        "bookings",
        "id",
        "status = 'pending'",
    ),
    (
        "ix_bookings_cancelled_id",
        "bookings",
        "id",
        "status = 'cancelled'",
    ),
    (
        "ix_payments_stale_id",
        "payments",
        "status, id",
        "status IN ('pending', 'processing')",
    ),
];

impl MigrationName for ClaimIndexes {
    fn name(&self) -> &str {
        "m20261203_000006_claim_indexes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ClaimIndexes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for (name, table, cols, filter) in CLAIM_INDEXES {
            db.execute_unprepared(&format!(
                "CREATE INDEX IF NOT EXISTS {name} ON {table} ({cols}) WHERE {filter}"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for (name, _, _, _) in CLAIM_INDEXES {
            db.execute_unprepared(&format!("DROP INDEX IF EXISTS {name}"))
                .await?;
        }
        Ok(())
    }
}

impl MigrationName for CreateTicketingTables {
    fn name(&self) -> &str {
        "m20261128_000001_create_ticketing_tables"
    }
}

/// Builds the columns of one table, choosing the backend's spelling of "now" for defaults.
struct Columns {
    backend: DbBackend,
    defs: Vec<ColumnDef>,
}

impl Columns {
    fn new(backend: DbBackend) -> Self {
        let mut id = ColumnDef::new("id");
        id.big_integer().not_null().auto_increment().primary_key();
        Columns {
            backend,
            defs: vec![id],
        }
    }

    fn text(mut self, name: &'static str, default: Option<&str>) -> Self {
        let mut c = ColumnDef::new(name);
        c.text();
        match default {
            Some(value) => {
                c.not_null().default(value.to_owned());
            }
            None => {
                c.null();
            }
        }
        self.defs.push(c);
        self
    }

    fn required_text(mut self, name: &'static str) -> Self {
        let mut c = ColumnDef::new(name);
        c.text().not_null();
        self.defs.push(c);
        self
    }

    fn big_int(mut self, name: &'static str, default: Option<i64>) -> Self {
        let mut c = ColumnDef::new(name);
        c.big_integer();
        match default {
            Some(value) => {
                c.not_null().default(value);
            }
            None => {
                c.null();
            }
        }
        self.defs.push(c);
        self
    }

    fn flag(mut self, name: &'static str) -> Self {
        let mut c = ColumnDef::new(name);
        c.boolean().not_null().default(false);
        self.defs.push(c);
        self
    }

    /// A nullable timestamp.
    fn at(mut self, name: &'static str) -> Self {
        let mut c = ColumnDef::new(name);
        c.timestamp_with_time_zone().null();
        self.defs.push(c);
        self
    }

    /// A timestamp that defaults to the insertion time, in the same text format the executor
    /// binds on SQLite, so rows inserted by plain SQL compare correctly with bound times.
    fn created_at(mut self, name: &'static str) -> Self {
        let now = match self.backend {
            DbBackend::Sqlite => Expr::cust("(strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))"),
            _ => Expr::cust("CURRENT_TIMESTAMP"),
        };
        let mut c = ColumnDef::new(name);
        c.timestamp_with_time_zone().not_null().default(now);
        self.defs.push(c);
        self
    }

    fn date(mut self, name: &'static str) -> Self {
        let mut c = ColumnDef::new(name);
        c.date().null();
        self.defs.push(c);
        self
    }

    fn table(self, name: &'static str) -> TableCreateStatement {
        let mut t = Table::create();
        t.table(name).if_not_exists();
        for mut c in self.defs {
            t.col(&mut c);
        }
        t
    }
}

fn index(table: &'static str, name: &'static str, cols: &[&'static str]) -> IndexCreateStatement {
    let mut i = Index::create();
    i.name(name).table(table).if_not_exists();
    for c in cols {
        i.col(*c);
    }
    i
}

fn unique_index(
    table: &'static str,
    name: &'static str,
    cols: &[&'static str],
) -> IndexCreateStatement {
    let mut i = index(table, name, cols);
    i.unique();
    i
}

pub const TABLES: &[&str] = &[
    "users",
    "events",
    "bookings",
    "payments",
    "email_outbox",
    "cache_entries",
    "documents",
    "login_events",
];

#[async_trait::async_trait]
impl MigrationTrait for CreateTicketingTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let b = manager.get_database_backend();

        let users = Columns::new(b)
            .required_text("email")
            .text("first_name", Some(""))
            .text("last_name", Some(""))
            .text("role", Some("customer"))
            .flag("email_verified")
            .date("date_of_birth")
            .flag("newsletter_subscribed")
            .flag("promotional_emails")
            .flag("reengagement_sent")
            .at("reengagement_sent_at")
            .at("last_login_at")
            .at("last_activity_at")
            .created_at("created_at")
            .table("users");

        let events = Columns::new(b)
            .big_int("organizer_id", None)
            .text("title", Some(""))
            .text("category", Some("general"))
            .text("venue", Some(""))
            .created_at("starts_at")
            .at("ends_at")
            .big_int("total_tickets", Some(0))
            .big_int("available_tickets", Some(0))
            .big_int("price", Some(0))
            .text("currency", Some("NGN"))
            .text("status", Some("upcoming"))
            .flag("archived")
            .at("archived_at")
            .at("completed_at")
            .created_at("created_at")
            .table("events");

        let bookings = Columns::new(b)
            .big_int("user_id", Some(0))
            .big_int("event_id", Some(0))
            .big_int("quantity", Some(1))
            .big_int("total_amount", Some(0))
            .text("currency", Some("NGN"))
            .text("status", Some("pending"))
            .created_at("created_at")
            .at("confirmed_at")
            .at("cancelled_at")
            .text("cancellation_reason", None)
            .flag("confirmation_email_sent")
            .at("confirmation_email_sent_at")
            .flag("reminder_sent")
            .at("reminder_sent_at")
            .flag("early_reminder_sent")
            .at("early_reminder_sent_at")
            .flag("follow_up_sent")
            .at("follow_up_sent_at")
            .flag("refund_requested")
            .at("refund_requested_at")
            .flag("refund_processed")
            .at("refund_processed_at")
            .big_int("refund_amount", None)
            .flag("refund_denied")
            .text("refund_denial_reason", None)
            .table("bookings");

        let payments = Columns::new(b)
            .big_int("booking_id", Some(0))
            .big_int("user_id", Some(0))
            .big_int("amount", Some(0))
            .text("currency", Some("NGN"))
            .text("status", Some("pending"))
            .text("failure_reason", None)
            .created_at("created_at")
            .at("paid_at")
            .at("failed_at")
            .at("abandoned_at")
            .at("refunded_at")
            .table("payments");

        let outbox = Columns::new(b)
            .required_text("dedupe_key")
            .required_text("kind")
            .required_text("recipient")
            .text("subject", Some(""))
            .text("payload", Some("{}"))
            .text("status", Some("pending"))
            .big_int("attempts", Some(0))
            .created_at("next_attempt_at")
            .text("last_error", None)
            .created_at("created_at")
            .at("sent_at")
            .table("email_outbox");

        // Cache entries are keyed by their key, not by a surrogate id.
        let mut cache = Table::create();
        cache
            .table("cache_entries")
            .if_not_exists()
            .col(ColumnDef::new("key").text().not_null().primary_key())
            .col(ColumnDef::new("value").text().not_null().default(""))
            .col(
                ColumnDef::new("size_bytes")
                    .big_integer()
                    .not_null()
                    .default(0),
            )
            .col(
                ColumnDef::new("expires_at")
                    .timestamp_with_time_zone()
                    .null(),
            );

        let documents = Columns::new(b)
            .required_text("path")
            .created_at("created_at")
            .table("documents");

        let logins = Columns::new(b)
            .big_int("user_id", Some(0))
            .created_at("created_at")
            .table("login_events");

        for table in [
            users, events, bookings, payments, outbox, cache, documents, logins,
        ] {
            manager.create_table(table).await?;
        }

        for i in [
            unique_index("users", "ux_users_email", &["email"]),
            index("users", "ix_users_created_at", &["created_at"]),
            index(
                "events",
                "ix_events_status_starts_at",
                &["status", "starts_at"],
            ),
            index("events", "ix_events_organizer", &["organizer_id"]),
            index(
                "bookings",
                "ix_bookings_status_created_at",
                &["status", "created_at"],
            ),
            index("bookings", "ix_bookings_event", &["event_id"]),
            index(
                "bookings",
                "ix_bookings_user_created_at",
                &["user_id", "created_at"],
            ),
            index(
                "payments",
                "ix_payments_status_created_at",
                &["status", "created_at"],
            ),
            index("payments", "ix_payments_booking", &["booking_id"]),
            unique_index(
                "email_outbox",
                "ux_email_outbox_dedupe_key",
                &["dedupe_key"],
            ),
            index(
                "email_outbox",
                "ix_email_outbox_status_next",
                &["status", "next_attempt_at"],
            ),
            index(
                "cache_entries",
                "ix_cache_entries_expires_at",
                &["expires_at"],
            ),
            unique_index("documents", "ux_documents_path", &["path"]),
            index(
                "login_events",
                "ix_login_events_created_at",
                &["created_at"],
            ),
        ] {
            manager.create_index(i).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in TABLES.iter().rev() {
            manager
                .drop_table(Table::drop().table(*table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
