//! Raft storage in redb: the log, the vote and the committed index are written durably before
//! openraft is told they are; the state machine (the small cluster record) lives in memory and
//! is persisted as snapshots, from which a restarted node resumes.

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{NodeId, TypeConfig};
use crate::state::{ClusterState, Outcome};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

type StErr = StorageError<NodeId>;

fn io_err(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

/// Open (or create) the node's raft database.
pub(crate) fn open(dir: &Path) -> Result<Arc<Database>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let path = dir.join("raft.redb");
    let db = Database::create(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
    let tx = db.begin_write().map_err(|e| e.to_string())?;
    {
        tx.open_table(LOGS).map_err(|e| e.to_string())?;
        tx.open_table(META).map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())?;
    Ok(Arc::new(db))
}

fn get_meta<T: for<'de> Deserialize<'de>>(db: &Database, key: &str) -> Result<Option<T>, AnyError> {
    let tx = db.begin_read().map_err(io_err)?;
    let t = tx.open_table(META).map_err(io_err)?;
    match t.get(key).map_err(io_err)? {
        Some(v) => serde_json::from_slice(v.value()).map(Some).map_err(io_err),
        None => Ok(None),
    }
}

fn put_meta<T: Serialize>(db: &Database, key: &str, value: &T) -> Result<(), AnyError> {
    let bytes = serde_json::to_vec(value).map_err(io_err)?;
    let tx = db.begin_write().map_err(io_err)?;
    {
        let mut t = tx.open_table(META).map_err(io_err)?;
        t.insert(key, bytes.as_slice()).map_err(io_err)?;
    }
    tx.commit().map_err(io_err)
}

/// Run a redb write (its commit fsyncs) on the blocking pool, so the runtime that renews the
/// lease never waits for the disk. openraft awaits each storage call before the next, so the
/// order of writes is unchanged; the call returns only once the commit is durable.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AnyError> + Send + 'static,
) -> Result<T, AnyError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io_err(format!("the storage task failed: {e}")))?
}

// ===== impl LogStore =====

/// The raft log, vote and committed index.
#[derive(Clone, Debug)]
pub(crate) struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        Self { db }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StErr> {
        let read = || -> Result<Vec<Entry<TypeConfig>>, AnyError> {
            let tx = self.db.begin_read().map_err(io_err)?;
            let t = tx.open_table(LOGS).map_err(io_err)?;
            let mut out = Vec::new();
            for item in t.range(range).map_err(io_err)? {
                let (_, v) = item.map_err(io_err)?;
                out.push(serde_json::from_slice(v.value()).map_err(io_err)?);
            }
            Ok(out)
        };
        read().map_err(|e| StorageIOError::read_logs(e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StErr> {
        let state = || -> Result<LogState<TypeConfig>, AnyError> {
            let last_purged: Option<LogId<NodeId>> = get_meta(&self.db, "last_purged")?;
            let tx = self.db.begin_read().map_err(io_err)?;
            let t = tx.open_table(LOGS).map_err(io_err)?;
            let last = match t.last().map_err(io_err)? {
                Some((_, v)) => {
                    let e: Entry<TypeConfig> = serde_json::from_slice(v.value()).map_err(io_err)?;
                    Some(e.log_id)
                }
                None => last_purged,
            };
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last,
            })
        };
        state().map_err(|e| StorageIOError::read_logs(e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StErr> {
        let (db, vote) = (self.db.clone(), *vote);
        blocking(move || put_meta(&db, "vote", &vote))
            .await
            .map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StErr> {
        get_meta(&self.db, "vote").map_err(|e| StorageIOError::read_vote(e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StErr> {
        let db = self.db.clone();
        blocking(move || put_meta(&db, "committed", &committed))
            .await
            .map_err(|e| StorageIOError::write(e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StErr> {
        get_meta::<Option<LogId<NodeId>>>(&self.db, "committed")
            .map(Option::flatten)
            .map_err(|e| StorageIOError::read(e).into())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let db = self.db.clone();
        let write = move || -> Result<(), AnyError> {
            let tx = db.begin_write().map_err(io_err)?;
            {
                let mut t = tx.open_table(LOGS).map_err(io_err)?;
                for e in entries {
                    let bytes = serde_json::to_vec(&e).map_err(io_err)?;
                    t.insert(e.log_id.index, bytes.as_slice()).map_err(io_err)?;
                }
            }
            // Durable before openraft counts the entries as stored.
            tx.commit().map_err(io_err)
        };
        match blocking(write).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StErr> {
        let db = self.db.clone();
        blocking(move || remove(&db, log_id.index..))
            .await
            .map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StErr> {
        let db = self.db.clone();
        blocking(move || put_meta(&db, "last_purged", &log_id))
            .await
            .map_err(StorageIOError::write)?;
        let db = self.db.clone();
        blocking(move || remove(&db, ..=log_id.index))
            .await
            .map_err(|e| StorageIOError::write_logs(e).into())
    }
}

fn remove(db: &Database, range: impl RangeBounds<u64>) -> Result<(), AnyError> {
    let tx = db.begin_write().map_err(io_err)?;
    {
        let mut t = tx.open_table(LOGS).map_err(io_err)?;
        let keys: Vec<u64> = t
            .range(range)
            .map_err(io_err)?
            .filter_map(|r| r.ok().map(|(k, _)| k.value()))
            .collect();
        for k in keys {
            t.remove(k).map_err(io_err)?;
        }
    }
    tx.commit().map_err(io_err)
}

// ===== impl StateMachine =====

/// What the state machine holds; shared with the DCS for reads.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct SmData {
    pub(crate) last_applied: Option<LogId<NodeId>>,
    pub(crate) membership: StoredMembership<NodeId, openraft::BasicNode>,
    pub(crate) state: ClusterState,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

#[derive(Clone, Debug)]
pub(crate) struct StateMachine {
    db: Arc<Database>,
    pub(crate) data: Arc<RwLock<SmData>>,
}

impl StateMachine {
    /// Resume from the last persisted snapshot, if any.
    pub(crate) fn load(db: Arc<Database>) -> Result<Self, String> {
        let data = match get_meta::<StoredSnapshot>(&db, "snapshot").map_err(|e| e.to_string())? {
            Some(s) => serde_json::from_slice(&s.data).map_err(|e| e.to_string())?,
            None => SmData::default(),
        };
        Ok(Self {
            db,
            data: Arc::new(RwLock::new(data)),
        })
    }

    fn snapshot_now(&self) -> Result<Snapshot<TypeConfig>, AnyError> {
        let d = self.data.read().map_err(io_err)?.clone();
        let bytes = serde_json::to_vec(&d).map_err(io_err)?;
        let id = match d.last_applied {
            Some(l) => format!("{}-{}", l.leader_id, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: d.last_applied,
            last_membership: d.membership.clone(),
            snapshot_id: id,
        };
        put_meta(
            &self.db,
            "snapshot",
            &StoredSnapshot {
                meta: meta.clone(),
                data: bytes.clone(),
            },
        )?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StErr> {
        self.snapshot_now()
            .map_err(|e| StorageIOError::write_snapshot(None, e).into())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<
        (
            Option<LogId<NodeId>>,
            StoredMembership<NodeId, openraft::BasicNode>,
        ),
        StErr,
    > {
        let d = self
            .data
            .read()
            .map_err(|e| StorageIOError::read_state_machine(io_err(e)))?;
        Ok((d.last_applied, d.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut d = self
            .data
            .write()
            .map_err(|e| StorageIOError::write_state_machine(io_err(e)))?;
        let mut out = Vec::new();
        for e in entries {
            d.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => out.push(Outcome::default()),
                EntryPayload::Normal(cmd) => out.push(d.state.apply(&cmd)),
                EntryPayload::Membership(m) => {
                    d.membership = StoredMembership::new(Some(e.log_id), m);
                    out.push(Outcome::default());
                }
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StErr> {
        let bytes = snapshot.into_inner();
        let install = || -> Result<(), AnyError> {
            let new: SmData = serde_json::from_slice(&bytes).map_err(io_err)?;
            put_meta(
                &self.db,
                "snapshot",
                &StoredSnapshot {
                    meta: meta.clone(),
                    data: bytes.clone(),
                },
            )?;
            *self.data.write().map_err(io_err)? = new;
            Ok(())
        };
        install().map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e).into())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StErr> {
        let stored = get_meta::<StoredSnapshot>(&self.db, "snapshot")
            .map_err(|e| StorageIOError::read_snapshot(None, e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
