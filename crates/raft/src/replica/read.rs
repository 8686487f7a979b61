//! The read path: before a linearizable read, a replica makes sure it has applied every write
//! acknowledged before the read arrived: on the leader by its lease (D26) or a ReadIndex
//! round, on a follower by asking the leader for its read index.

use super::{request_child, ReplicaError, ShardReplica, C};
use crate::network::{decode_payload, encode_payload, ENCODING_POSTCARD};
use crate::raft_config::{LinearizableReads, LEASE_READ_FRACTION};
use cairn_proto::raft::v1 as pb;
use cairn_types::NodeId;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{LinearizableReadError, RaftError};
use openraft::raft::linearizable_read::{Linearizer, ReadLogId};
use openraft::{LinearizerOption, ReadPolicy};
use std::time::Duration;
use tracing::Instrument;

impl ShardReplica {
    /// Returns once this replica has applied every write acknowledged before the call: on the
    /// leader by its lease or, when that has lapsed or is off, by confirming leadership with a
    /// quorum (ReadIndex); on a follower by asking the leader for its read index and waiting
    /// to apply up to it.
    pub async fn linearizable_barrier(&self) -> Result<(), ReplicaError> {
        let span = request_child(|| tracing::info_span!("raft.read_index", shard = self.shard.0));
        self.read_index_barrier().instrument(span).await
    }

    async fn read_index_barrier(&self) -> Result<(), ReplicaError> {
        let timeout = self.context.read_index_timeout;
        let read_log_id = if self.raft.is_leader() {
            None
        } else {
            let metrics = self.raft.metrics().borrow_watched().clone();
            let Some(leader) = metrics.current_leader else {
                return Err(ReplicaError::NotLeader {
                    shard: self.shard,
                    leader: None,
                    leader_address: None,
                });
            };
            let address = metrics
                .membership_config
                .membership()
                .get_node(&leader)
                .map(|n| n.address.clone());
            let Some(address) = address else {
                return Err(ReplicaError::NotLeader {
                    shard: self.shard,
                    leader: Some(leader),
                    leader_address: None,
                });
            };
            Some(self.fetch_read_index(leader, &address, timeout).await?)
        };
        match read_log_id {
            None if self.context.linearizable_reads == LinearizableReads::Lease => {
                match self.lease_read_log_id().await? {
                    Some(read_log_id) => self.await_applied(read_log_id, timeout).await,
                    // The lease has lapsed (no quorum acknowledged recently): ReadIndex.
                    None => self.confirm_by_read_index(timeout).await,
                }
            }
            None => self.confirm_by_read_index(timeout).await,
            Some(read_log_id) => self.await_applied(read_log_id, timeout).await,
        }
    }

    /// The read index under the leader's lease, with no round trip; `None` when the lease has
    /// lapsed and a quorum has to be asked.
    async fn lease_read_log_id(&self) -> Result<Option<ReadLogId<C>>, ReplicaError> {
        // Part of the lease only: the followers' leases last the whole of it, by their clocks.
        let lease = Duration::from_millis(self.context.raft_config.election_timeout_max);
        let option = LinearizerOption::new(Some(lease.mul_f64(LEASE_READ_FRACTION)), false)
            .with_wait_timeout(Duration::ZERO);
        match self.raft.get_read_linearizer(option).await {
            Ok(linearizer) => Ok(Some(*linearizer.read_log_id())),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward))) => {
                Err(self.not_leader(&forward))
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => Ok(None),
            Err(RaftError::Fatal(fatal)) => Err(self.fatal(fatal)),
        }
    }

    /// Waits until this replica has applied up to `read_log_id`.
    async fn await_applied(
        &self,
        read_log_id: ReadLogId<C>,
        timeout: Duration,
    ) -> Result<(), ReplicaError> {
        // Usually already applied: check the published metrics in place (openraft's own wait
        // would subscribe and copy them), with openraft's comparison.
        if self.raft.metrics().borrow_watched().last_applied.as_ref() >= Some(read_log_id.log_id())
        {
            return Ok(());
        }
        let linearizer = Linearizer::new(self.context.node_id, read_log_id, None);
        match linearizer.try_await_ready(&self.raft, Some(timeout)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ReplicaError::Unavailable {
                shard: self.shard,
                reason: format!("did not apply up to the read index within {timeout:?}"),
            }),
            Err(fatal) => Err(self.fatal(fatal)),
        }
    }

    /// ReadIndex on the leader: a quorum acknowledges a heartbeat sent after the call, then
    /// this replica applies up to the index it had when the call arrived.
    async fn confirm_by_read_index(&self, timeout: Duration) -> Result<(), ReplicaError> {
        let unavailable = |reason: String| ReplicaError::Unavailable {
            shard: self.shard,
            reason,
        };
        let confirmed = tokio::time::timeout(
            timeout,
            self.raft.ensure_linearizable(ReadPolicy::ReadIndex),
        )
        .await
        .map_err(|_| unavailable(format!("read index not confirmed within {timeout:?}")))?;
        match confirmed {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward))) => {
                Err(self.not_leader(&forward))
            }
            Err(RaftError::APIError(other)) => Err(unavailable(other.to_string())),
            Err(RaftError::Fatal(fatal)) => Err(self.fatal(fatal)),
        }
    }

    async fn fetch_read_index(
        &self,
        leader: NodeId,
        address: &str,
        timeout: Duration,
    ) -> Result<ReadLogId<C>, ReplicaError> {
        let unavailable = |reason: String| ReplicaError::Unavailable {
            shard: self.shard,
            reason,
        };
        let mut client = self.context.channels.client(address).map_err(unavailable)?;
        let mut request = tonic::Request::new(pb::RaftRequest {
            shard_id: self.shard.0,
            to_node_id: leader.0,
            encoding: ENCODING_POSTCARD,
            payload: Default::default(),
        });
        request.set_timeout(timeout);
        self.context
            .channels
            .destination(leader)
            .stamp(request.metadata_mut());
        let reply = tokio::time::timeout(timeout, client.read_index(request))
            .await
            .map_err(|_| {
                unavailable(format!(
                    "leader {leader} gave no read index within {timeout:?}"
                ))
            })?
            .map_err(|status| {
                unavailable(format!("read index from {leader}: {}", status.message()))
            })?
            .into_inner();
        let answer: Result<ReadLogId<C>, ReadIndexRefusal> =
            decode_payload(reply.encoding, &reply.payload).map_err(unavailable)?;
        answer.map_err(|refusal| match refusal {
            ReadIndexRefusal::NotLeader {
                leader,
                leader_address,
            } => ReplicaError::NotLeader {
                shard: self.shard,
                leader,
                leader_address,
            },
            ReadIndexRefusal::Unavailable(reason) => unavailable(reason),
        })
    }

    /// Leader side of a follower's ReadIndex request.
    pub async fn serve_read_index(&self) -> Vec<u8> {
        if self.context.linearizable_reads == LinearizableReads::Lease {
            // A lapsed lease or another leader: ReadIndex below answers either.
            if let Ok(Some(read_log_id)) = self.lease_read_log_id().await {
                let answer: Result<ReadLogId<C>, ReadIndexRefusal> = Ok(read_log_id);
                return encode_payload(&answer);
            }
        }
        let answer: Result<ReadLogId<C>, ReadIndexRefusal> =
            match self.raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
                Ok(linearizer) => Ok(*linearizer.read_log_id()),
                Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward))) => {
                    Err(ReadIndexRefusal::NotLeader {
                        leader: forward.leader_id,
                        leader_address: forward.leader_node.map(|node| node.address),
                    })
                }
                Err(other) => Err(ReadIndexRefusal::Unavailable(other.to_string())),
            };
        encode_payload(&answer)
    }
}

/// Why a leader did not hand out a read index.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum ReadIndexRefusal {
    NotLeader {
        leader: Option<NodeId>,
        leader_address: Option<String>,
    },
    Unavailable(String),
}
