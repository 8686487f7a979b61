//! Exactly-once writes: the per-shard table of client sessions and remembered results.
//!
//! A write carries `(client, sequence)`. The first time the shard applies it, the result is
//! remembered; a retry with the same pair gets the remembered result and changes nothing.
//! Everything here is part of the replicated state (persisted in the `sessions` column family
//! in the same batch as the write, and carried in snapshots), and every decision depends only
//! on the log, so all replicas agree on what is a duplicate.
//!
//! Memory and disk are bounded: at most `results_per_client_max` results per client (older
//! ones are dropped, and a retry of a dropped one is refused with `WindowExceeded` rather than
//! applied again), at most `sessions_max` sessions per shard (the least recently active is
//! evicted), and a session idle for `session_ttl_ms` (by the proposing leaders' clocks) expires.
//! Retries must therefore stop well within `session_ttl_ms` — the SDK and gateways bound their
//! retry deadline far below it.

use crate::codec;
use crate::command::{Command, WriteId, WriteResult};
use crate::error::{Result, StorageError};
use crate::keys;
use cairn_types::{ClientId, Sequence, ShardId};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch, DB};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// Bounds of the session table. Part of the replicated state machine's behaviour: every
/// replica of a shard must run with the same values (they are cluster-wide settings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionLimits {
    /// Idle time after which a client's session and results are forgotten, in milliseconds.
    pub session_ttl_ms: u64,
    /// Most client sessions one shard remembers.
    pub sessions_max: usize,
    /// Most remembered write results per client and shard.
    pub results_per_client_max: usize,
    /// Largest remembered result, in bytes; a larger result is remembered only as "applied".
    pub result_bytes_max: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            session_ttl_ms: 10 * 60 * 1000,
            sessions_max: 100_000,
            results_per_client_max: 4096,
            result_bytes_max: 64 * 1024,
        }
    }
}

/// What the session head key stores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SessionHead {
    last_active_ms: u64,
    /// Results of sequences below this are forgotten.
    floor: Sequence,
}

#[derive(Debug)]
struct Session {
    head: SessionHead,
    remembered: BTreeSet<Sequence>,
}

/// A remembered result as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RememberedResult {
    Full(WriteResult),
    /// The write was applied but its result was larger than `result_bytes_max`.
    TooLarge,
}

/// What the table says about an incoming write.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Not seen before: apply it, then call [`SessionTable::remember`].
    New,
    /// Applied before: answer with this and apply nothing.
    Duplicate(RememberedResult),
    /// Too old to tell: refuse without applying.
    WindowExceeded { oldest_remembered: Sequence },
}

pub struct SessionTable {
    shard: ShardId,
    limits: SessionLimits,
    sessions: HashMap<ClientId, Session>,
    by_activity: BTreeSet<(u64, ClientId)>,
    /// The latest `proposed_at_ms` seen; never goes back even if a new leader's clock does.
    clock_ms: u64,
}

impl SessionTable {
    pub fn new(shard: ShardId, limits: SessionLimits) -> Self {
        Self {
            shard,
            limits,
            sessions: HashMap::new(),
            by_activity: BTreeSet::new(),
            clock_ms: 0,
        }
    }

    /// Rebuilds the table from the `sessions` column family (after open or snapshot install).
    pub fn load(db: &DB, shard: ShardId, limits: SessionLimits) -> Result<Self> {
        let mut table = Self::new(shard, limits);
        let cf = db
            .cf_handle(keys::CF_SESSIONS)
            .expect("sessions column family exists");
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(keys::shard_upper_bound(shard));
        let start = keys::shard_prefix(shard);
        for item in db.iterator_cf_opt(cf, options, IteratorMode::From(&start, Direction::Forward))
        {
            let (key, value) = item?;
            let client = ClientId(u64_at(&key, 8).ok_or_else(|| bad_key(&key))?);
            match key.len() {
                16 => {
                    let head: SessionHead =
                        codec::decode(&value).map_err(StorageError::corrupt("session head"))?;
                    table.clock_ms = table.clock_ms.max(head.last_active_ms);
                    table.by_activity.insert((head.last_active_ms, client));
                    match table.sessions.get_mut(&client) {
                        Some(session) => session.head = head,
                        None => {
                            table.sessions.insert(
                                client,
                                Session {
                                    head,
                                    remembered: BTreeSet::new(),
                                },
                            );
                        }
                    }
                }
                24 => {
                    let sequence = Sequence(u64_at(&key, 16).ok_or_else(|| bad_key(&key))?);
                    table
                        .sessions
                        .entry(client)
                        .or_insert_with(|| Session {
                            head: SessionHead {
                                last_active_ms: 0,
                                floor: Sequence(0),
                            },
                            remembered: BTreeSet::new(),
                        })
                        .remembered
                        .insert(sequence);
                }
                _ => return Err(bad_key(&key)),
            }
        }
        Ok(table)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Advances the table's clock to the command's time and expires idle sessions.
    pub fn tick(&mut self, command: &Command, batch: &mut WriteBatch, db: &DB) {
        self.clock_ms = self.clock_ms.max(command.proposed_at_ms);
        let deadline = self.clock_ms.saturating_sub(self.limits.session_ttl_ms);
        while let Some(&(last_active, client)) = self.by_activity.first() {
            if last_active >= deadline {
                break;
            }
            self.forget_session(client, batch, db);
        }
    }

    /// Whether `command` retries a write whose result is remembered: [`Self::admit`] then
    /// reads that result from the database.
    pub fn is_remembered(&self, command: &Command) -> bool {
        self.is_remembered_id(command.write_id) || self.is_remembered_id(command.op.txn_write_id())
    }

    /// Whether the result of `write_id` is remembered.
    pub fn is_remembered_id(&self, write_id: Option<WriteId>) -> bool {
        write_id.is_some_and(|write_id| {
            self.sessions
                .get(&write_id.client)
                .is_some_and(|session| session.remembered.contains(&write_id.sequence))
        })
    }

    /// Decides whether `command` is new, a duplicate or too old.
    pub fn admit(&self, command: &Command, db: &DB) -> Result<Admission> {
        self.admit_id(command.write_id, db)
    }

    /// Decides whether a write with `write_id` is new, a duplicate or too old (a transaction's
    /// prewrite asks with the client's write id, which its command does not carry).
    pub fn admit_id(&self, write_id: Option<WriteId>, db: &DB) -> Result<Admission> {
        let Some(write_id) = write_id else {
            return Ok(Admission::New);
        };
        let Some(session) = self.sessions.get(&write_id.client) else {
            return Ok(Admission::New);
        };
        if session.remembered.contains(&write_id.sequence) {
            let cf = db
                .cf_handle(keys::CF_SESSIONS)
                .expect("sessions column family exists");
            let key = keys::session_result_key(self.shard, write_id.client, write_id.sequence);
            let bytes = db
                .get_pinned_cf(cf, key)?
                .ok_or(StorageError::Inconsistent(format!(
                    "remembered result of {} {} missing",
                    write_id.client, write_id.sequence
                )))?;
            let result = codec::decode(&bytes).map_err(StorageError::corrupt("session result"))?;
            return Ok(Admission::Duplicate(result));
        }
        if write_id.sequence < session.head.floor {
            return Ok(Admission::WindowExceeded {
                oldest_remembered: session.head.floor,
            });
        }
        Ok(Admission::New)
    }

    /// Records the result of a newly applied write, and forgets what the client has
    /// acknowledged or what no longer fits the bounds.
    pub fn remember(
        &mut self,
        command: &Command,
        result: &WriteResult,
        batch: &mut WriteBatch,
        db: &DB,
    ) {
        if let Some(write_id) = command.write_id {
            self.remember_id(write_id, result, batch, db);
        }
    }

    /// Records `result` under `write_id` (a transaction's primary commit remembers the
    /// client's answer this way), and forgets what the client has acknowledged or what no
    /// longer fits the bounds.
    pub fn remember_id(
        &mut self,
        write_id: WriteId,
        result: &WriteResult,
        batch: &mut WriteBatch,
        db: &DB,
    ) {
        let cf = db
            .cf_handle(keys::CF_SESSIONS)
            .expect("sessions column family exists");
        let client = write_id.client;
        if !self.sessions.contains_key(&client) && self.sessions.len() >= self.limits.sessions_max {
            if let Some(&(_, oldest)) = self.by_activity.first() {
                self.forget_session(oldest, batch, db);
            }
        }
        let clock_ms = self.clock_ms;
        let session = self.sessions.entry(client).or_insert_with(|| Session {
            head: SessionHead {
                last_active_ms: clock_ms,
                floor: write_id.first_incomplete,
            },
            remembered: BTreeSet::new(),
        });
        self.by_activity
            .remove(&(session.head.last_active_ms, client));
        session.head.last_active_ms = clock_ms;
        self.by_activity.insert((clock_ms, client));

        let encoded = codec::encode(&RememberedResult::Full(result.clone()));
        let encoded = if encoded.len() > self.limits.result_bytes_max {
            codec::encode(&RememberedResult::TooLarge)
        } else {
            encoded
        };
        batch.put_cf(
            cf,
            keys::session_result_key(self.shard, client, write_id.sequence),
            encoded,
        );
        session.remembered.insert(write_id.sequence);

        // The client has every answer below first_incomplete: those results can go.
        if write_id.first_incomplete > session.head.floor {
            session.head.floor = write_id.first_incomplete;
        }
        // Past the window, the oldest results go.
        while session.remembered.len() > self.limits.results_per_client_max {
            let oldest = session.remembered.pop_first().expect("non-empty");
            batch.delete_cf(cf, keys::session_result_key(self.shard, client, oldest));
            session.head.floor = session.head.floor.max(Sequence(oldest.0 + 1));
        }
        while let Some(&oldest) = session.remembered.first() {
            if oldest >= session.head.floor {
                break;
            }
            session.remembered.pop_first();
            batch.delete_cf(cf, keys::session_result_key(self.shard, client, oldest));
        }
        batch.put_cf(
            cf,
            keys::session_head_key(self.shard, client),
            codec::encode(&session.head),
        );
    }

    fn forget_session(&mut self, client: ClientId, batch: &mut WriteBatch, db: &DB) {
        let cf = db
            .cf_handle(keys::CF_SESSIONS)
            .expect("sessions column family exists");
        if let Some(session) = self.sessions.remove(&client) {
            self.by_activity
                .remove(&(session.head.last_active_ms, client));
            for sequence in session.remembered {
                batch.delete_cf(cf, keys::session_result_key(self.shard, client, sequence));
            }
        }
        batch.delete_cf(cf, keys::session_head_key(self.shard, client));
    }
}

fn u64_at(key: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(at..at + 8)?.try_into().ok()?))
}

fn bad_key(key: &[u8]) -> StorageError {
    StorageError::Inconsistent(format!("malformed session key of {} bytes", key.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Put, PutResult, WriteId, WriteOp};
    use cairn_types::Revision;

    fn command(client: u64, sequence: u64, first_incomplete: u64, at_ms: u64) -> Command {
        Command {
            write_id: Some(WriteId {
                client: ClientId(client),
                sequence: Sequence(sequence),
                first_incomplete: Sequence(first_incomplete),
            }),
            proposed_at_ms: at_ms,
            op: WriteOp::Put(Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                prev_kv: false,
                condition: None,
            }),
            revision: Default::default(),
            trace: None,
        }
    }

    fn result(revision: u64) -> WriteResult {
        WriteResult::Put(PutResult {
            revision: Revision(revision),
            succeeded: true,
            prev_kv: None,
        })
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        db: std::sync::Arc<DB>,
        table: SessionTable,
    }

    impl Fixture {
        fn new(limits: SessionLimits) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let db =
                crate::database::open_database(dir.path(), &Default::default(), Default::default())
                    .unwrap();
            let table = SessionTable::new(ShardId(1), limits);
            Self {
                _dir: dir,
                db,
                table,
            }
        }

        /// Runs one command through the table as the state machine does; returns the admission.
        fn apply(&mut self, command: &Command, revision: u64) -> Admission {
            let mut batch = WriteBatch::default();
            self.table.tick(command, &mut batch, &self.db);
            let admission = self.table.admit(command, &self.db).unwrap();
            if admission == Admission::New {
                self.table
                    .remember(command, &result(revision), &mut batch, &self.db);
            }
            self.db.write(batch).unwrap();
            admission
        }

        fn reloaded(&self) -> SessionTable {
            SessionTable::load(&self.db, ShardId(1), self.table.limits.clone()).unwrap()
        }
    }

    #[test]
    fn a_duplicate_gets_the_first_result_even_after_reload() {
        let mut fixture = Fixture::new(SessionLimits::default());
        assert_eq!(fixture.apply(&command(7, 1, 1, 1_000), 10), Admission::New);
        assert_eq!(
            fixture.apply(&command(7, 1, 1, 1_001), 11),
            Admission::Duplicate(RememberedResult::Full(result(10)))
        );
        fixture.table = fixture.reloaded();
        assert_eq!(
            fixture.apply(&command(7, 1, 1, 1_002), 12),
            Admission::Duplicate(RememberedResult::Full(result(10)))
        );
    }

    #[test]
    fn acknowledged_and_overflowing_results_are_forgotten_on_disk_too() {
        let limits = SessionLimits {
            results_per_client_max: 3,
            ..SessionLimits::default()
        };
        let mut fixture = Fixture::new(limits);
        for sequence in 1..=5 {
            fixture.apply(&command(7, sequence, 1, 1_000), sequence);
        }
        // Only 3, 4, 5 are kept; 1 and 2 are below the window.
        assert_eq!(
            fixture.apply(&command(7, 1, 1, 1_000), 99),
            Admission::WindowExceeded {
                oldest_remembered: Sequence(3)
            }
        );
        let reloaded = fixture.reloaded();
        assert_eq!(
            reloaded.sessions[&ClientId(7)]
                .remembered
                .iter()
                .map(|s| s.0)
                .collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(
            reloaded
                .admit(&command(7, 2, 1, 1_000), &fixture.db)
                .unwrap(),
            Admission::WindowExceeded {
                oldest_remembered: Sequence(3)
            }
        );

        // The client acknowledges everything below 5.
        fixture.apply(&command(7, 6, 5, 1_000), 6);
        let reloaded = fixture.reloaded();
        assert_eq!(
            reloaded.sessions[&ClientId(7)]
                .remembered
                .iter()
                .map(|s| s.0)
                .collect::<Vec<_>>(),
            [5, 6]
        );
    }

    #[test]
    fn idle_sessions_expire_by_the_log_clock_and_the_table_is_bounded() {
        let limits = SessionLimits {
            session_ttl_ms: 10_000,
            sessions_max: 2,
            ..SessionLimits::default()
        };
        let mut fixture = Fixture::new(limits);
        fixture.apply(&command(1, 1, 1, 1_000), 1);
        fixture.apply(&command(2, 1, 1, 2_000), 2);
        assert_eq!(fixture.table.len(), 2);
        // A third client evicts the least recently active one.
        fixture.apply(&command(3, 1, 1, 3_000), 3);
        assert_eq!(fixture.table.len(), 2);
        assert!(!fixture.table.sessions.contains_key(&ClientId(1)));
        // Time in the log moves past the ttl of client 2 (last active at 2 000).
        fixture.apply(&command(3, 2, 2, 12_500), 4);
        assert!(!fixture.table.sessions.contains_key(&ClientId(2)));
        assert_eq!(fixture.reloaded().len(), 1, "expiry is persisted");
        // A leader whose clock is behind does not move time back.
        fixture.apply(&command(3, 3, 3, 5_000), 5);
        assert_eq!(fixture.table.clock_ms, 12_500);
    }
}
