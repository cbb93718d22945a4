//! Deterministic demo data (in progress).
use sea_orm::DatabaseConnection;

use crate::config::{Dirs, SeedArgs};

pub async fn run(_db: &DatabaseConnection, _dirs: &Dirs, _args: &SeedArgs) -> anyhow::Result<()> {
    anyhow::bail!("seed-demo is not available yet")
}
