//! Each dataset's current snapshot, as this process knows it, and news of changes of data
//! and of rights.
//!
//! Result caches key their entries by the snapshot ids of the tables a query read, so they
//! need those ids on every request without asking the database. Commits made by this
//! process are reported here the moment they land ([`DataVersions::committed`]); commits
//! made by other processes on the same catalog are found by a poller that hands the
//! catalog's list to [`DataVersions::observe`]. Snapshot ids only grow, so a late report
//! never moves a dataset back.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::watch;

/// The known current snapshot of every dataset, and a change counter to wait on.
pub struct DataVersions {
    /// Dataset id → current snapshot id; absent before the dataset's first commit.
    snapshots: RwLock<HashMap<i64, i64>>,
    /// Datasets known, committed or not (a new dataset changes the catalog listing).
    datasets: AtomicUsize,
    /// Incremented on every change; waiters see the newest value.
    generation: watch::Sender<u64>,
    /// Incremented when this process changes who may read what (a share decision, a
    /// revoked grant): caches keyed by a department's rights look again at once.
    access: watch::Sender<u64>,
}

impl Default for DataVersions {
    fn default() -> Self {
        Self {
            snapshots: RwLock::default(),
            datasets: AtomicUsize::new(0),
            generation: watch::Sender::new(0),
            access: watch::Sender::new(0),
        }
    }
}

impl DataVersions {
    /// The dataset's current snapshot id, `None` before its first commit.
    pub fn snapshot_of(&self, dataset_id: i64) -> Option<i64> {
        self.snapshots
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&dataset_id)
            .copied()
    }

    /// How many changes this process has seen: a version for whatever depends on the
    /// whole catalog (the list of datasets, every snapshot).
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// A receiver that wakes up after each change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// A receiver that wakes up after each change of rights made by this process.
    pub fn subscribe_access(&self) -> watch::Receiver<u64> {
        self.access.subscribe()
    }

    /// This process changed grants (approved a request, revoked a grant).
    pub fn access_changed(&self) {
        self.access.send_modify(|g| *g += 1);
    }

    /// This process committed `snapshot_id` to the dataset.
    pub fn committed(&self, dataset_id: i64, snapshot_id: i64) {
        let moved = {
            let mut snapshots = self
                .snapshots
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            advance(&mut snapshots, dataset_id, snapshot_id)
        };
        if moved {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// The catalog's current snapshots as a poller read them; announces one change if any
    /// dataset moved or appeared.
    pub fn observe(&self, current: &[(i64, Option<i64>)]) {
        let mut moved = false;
        {
            let mut snapshots = self
                .snapshots
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (dataset_id, snapshot_id) in current {
                if let Some(snapshot_id) = snapshot_id {
                    moved |= advance(&mut snapshots, *dataset_id, *snapshot_id);
                }
            }
        }
        moved |= self.datasets.swap(current.len(), Ordering::Relaxed) != current.len();
        if moved {
            self.generation.send_modify(|g| *g += 1);
        }
    }
}

fn advance(snapshots: &mut HashMap<i64, i64>, dataset_id: i64, snapshot_id: i64) -> bool {
    match snapshots.get(&dataset_id) {
        Some(known) if *known >= snapshot_id => false,
        _ => {
            snapshots.insert(dataset_id, snapshot_id);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_only_move_forward_and_announce_changes() {
        let versions = DataVersions::default();
        let mut waiter = versions.subscribe();
        versions.observe(&[(1, None), (2, Some(10))]);
        assert!(waiter.has_changed().expect("open"));
        waiter.mark_unchanged();
        assert_eq!(versions.snapshot_of(1), None);
        assert_eq!(versions.snapshot_of(2), Some(10));

        versions.committed(1, 11);
        assert_eq!(versions.snapshot_of(1), Some(11));
        assert!(waiter.has_changed().expect("open"));
        waiter.mark_unchanged();

        // A poll that read the catalog before the commit landed changes nothing.
        let before = versions.generation();
        versions.observe(&[(1, None), (2, Some(10))]);
        assert_eq!(versions.snapshot_of(1), Some(11));
        assert_eq!(versions.generation(), before);
        assert!(!waiter.has_changed().expect("open"));

        // Another process's commit, and a new dataset, are news.
        versions.observe(&[(1, Some(11)), (2, Some(12))]);
        assert_eq!(versions.snapshot_of(2), Some(12));
        versions.observe(&[(1, Some(11)), (2, Some(12)), (3, None)]);
        assert_eq!(versions.generation(), before + 2);
        versions.committed(2, 12);
        assert_eq!(versions.generation(), before + 2);
    }
}
