//! The job definitions every part of a replica reads (trigger, dispatch, ticker), kept in
//! memory so that no run costs a job read. Reloaded when this replica changes a job, when
//! another replica says it did (a notification, on Postgres), and by a slow fallback poll.
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::store::{self, Store, job};

pub type Jobs = Arc<BTreeMap<String, Arc<job::Model>>>;

pub struct JobCache {
    jobs: RwLock<Jobs>,
    /// Bumped on every change; the ticker re-registers schedules when it moves.
    version: watch::Sender<u64>,
}

impl Default for JobCache {
    fn default() -> Self {
        Self {
            jobs: RwLock::new(Arc::new(BTreeMap::new())),
            version: watch::Sender::new(0),
        }
    }
}

impl JobCache {
    pub fn all(&self) -> Jobs {
        self.jobs
            .read()
            .map(|j| j.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    pub fn get(&self, name: &str) -> Option<Arc<job::Model>> {
        self.all().get(name).cloned()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn replace(&self, jobs: Jobs) {
        let changed = {
            let mut current = self.jobs.write().unwrap_or_else(|e| e.into_inner());
            let changed = **current != *jobs;
            *current = jobs;
            changed
        };
        if changed {
            self.version.send_modify(|v| *v += 1);
        }
    }

    /// A job this replica just changed.
    pub fn put(&self, j: job::Model) {
        let mut jobs = (*self.all()).clone();
        jobs.insert(j.name.clone(), Arc::new(j));
        self.replace(Arc::new(jobs));
    }

    /// Reads every job again (one query).
    pub async fn refresh(&self, store: &Store) -> store::Result<()> {
        let jobs = store.jobs(None).await?;
        self.replace(Arc::new(
            jobs.into_iter()
                .map(|j| (j.name.clone(), Arc::new(j)))
                .collect(),
        ));
        Ok(())
    }
}
