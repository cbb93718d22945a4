//! sea-orm entities of the control plane's tables (see `migration.rs` for why each column exists).
//! States, triggers and policies are the typed enums of `crate::lifecycle`, stored as text.

pub mod job {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "jobs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub service: String,
        pub task: String,
        pub description: String,
        pub schedule: String,
        pub default_schedule: String,
        pub timezone: String,
        pub enabled: bool,
        pub overlap_policy: crate::lifecycle::OverlapPolicy,
        pub missed_tick_policy: crate::lifecycle::MissedTickPolicy,
        pub catch_up_window_secs: i32,
        pub timeout_secs: i32,
        pub max_retries: i32,
        pub retry_backoff_secs: i32,
        pub operator_modified: bool,
        pub schedule_since: DateTimeUtc,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
        pub updated_by: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod run {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "runs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub job: String,
        pub state: crate::lifecycle::RunState,
        pub trigger: crate::lifecycle::Trigger,
        pub scheduled_for: DateTimeUtc,
        pub tick_at: Option<DateTimeUtc>,
        pub idempotency_key: Option<String>,
        pub active_slot: Option<i32>,
        pub attempt: i32,
        pub executor_id: Option<String>,
        pub owner: Option<String>,
        pub lease_expires_at: Option<DateTimeUtc>,
        pub not_before: DateTimeUtc,
        pub deadline_at: Option<DateTimeUtc>,
        pub cancel_requested: bool,
        pub params: Option<String>,
        pub summary: Option<String>,
        pub error: Option<String>,
        pub reason: Option<String>,
        pub triggered_by: Option<String>,
        pub trace_parent: Option<String>,
        pub created_at: DateTimeUtc,
        pub started_at: Option<DateTimeUtc>,
        pub finished_at: Option<DateTimeUtc>,
        pub updated_at: DateTimeUtc,
        /// Sequence number of the run's newest event: writers number their events from it.
        pub last_seq: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod run_event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "run_events")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub run_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        pub at: DateTimeUtc,
        pub kind: String,
        pub payload: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod executor {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "executors")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub address: String,
        pub jobs: String,
        pub version: String,
        pub running: i32,
        pub outbox_pending: i64,
        pub emails_sent: i64,
        pub emails_failed: i64,
        pub deregistered: bool,
        pub registered_at: DateTimeUtc,
        pub last_heartbeat_at: DateTimeUtc,
        /// The current registration; heartbeats must carry it.
        pub session: Option<String>,
        /// JSON list of `{job, params: [{name, type, min, max}]}` the executor declared.
        pub tasks: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod report {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "reports")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub kind: String,
        pub period: String,
        pub job: String,
        pub run_id: String,
        pub body: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod lease {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "leases")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub holder: String,
        pub expires_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
