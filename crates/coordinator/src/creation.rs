//! Carrying out shard creations: `CreateShard` and `ResumeShard`, the I/O side of
//! [`crate::founding`] (D51).
//!
//! The order of the writes is what makes an interrupted creation resumable and never
//! forked: the `Founding` goes first (a successor finds the creation), then the shard's
//! initial voters, then the replicas, then `initialize_sent` (committed before the first
//! InitializeShard leaves, so a successor that does not see it knows no replica was
//! initialized), and InitializeShard last.

use crate::coordinator::Coordinator;
use crate::error::{CoordinatorError, Result};
use crate::metadata::{Founding, Metadata, ShardRecord};
use cairn_proto::node::v1 as node_pb;
use cairn_types::{NodeId, ShardId};

impl Coordinator {
    /// Creates `shard` with `nodes` as its voters, the first of them founding the group.
    pub(crate) async fn create_shard(
        &self,
        metadata: &Metadata,
        shard: ShardId,
        nodes: &[NodeId],
    ) -> Result<()> {
        if let Some(founding) = metadata.founding.get(&shard) {
            if founding.initialize_sent {
                // The planner only creates a shard never initialized: this is a bug, and
                // going on could found a second group for the shard.
                return Err(CoordinatorError::Internal(format!(
                    "{shard} may be initialized on {:?}: it is not created again elsewhere",
                    founding.voters
                )));
            }
        }
        let founder = *nodes
            .first()
            .ok_or_else(|| CoordinatorError::Internal("empty placement".into()))?;
        self.metadata
            .put_founding(
                shard,
                &Founding {
                    voters: nodes.to_vec(),
                    initialize_sent: false,
                },
            )
            .await?;
        self.metadata
            .put_shard(&ShardRecord {
                initial_voters: nodes.to_vec(),
                ..metadata.shard_record(shard)
            })
            .await?;
        self.found_shard(metadata, shard, nodes, nodes, founder)
            .await
    }

    /// Carries on with the interrupted creation of `shard`: its replicas on `create_on`,
    /// then InitializeShard with the voters it was created with.
    pub(crate) async fn resume_shard(
        &self,
        metadata: &Metadata,
        shard: ShardId,
        voters: &[NodeId],
        create_on: &[NodeId],
        founder: NodeId,
    ) -> Result<()> {
        if metadata.founding.get(&shard).map(|f| f.voters.as_slice()) != Some(voters) {
            return Err(CoordinatorError::Internal(format!(
                "{shard}: the creation to resume is not the one recorded"
            )));
        }
        tracing::warn!(%shard, ?voters, ?create_on, %founder, "resuming an interrupted shard creation");
        self.found_shard(metadata, shard, voters, create_on, founder)
            .await
    }

    /// Creates the replicas on `create_on`, records that InitializeShard is being sent, and
    /// sends it to `founder`. Every step may be repeated: a replica that exists is kept, and a
    /// replica already initialized answers that it was (with the same membership entry, D51).
    async fn found_shard(
        &self,
        metadata: &Metadata,
        shard: ShardId,
        voters: &[NodeId],
        create_on: &[NodeId],
        founder: NodeId,
    ) -> Result<()> {
        for node in create_on {
            self.create_replica(metadata, shard, *node).await?;
        }
        let sent = Founding {
            voters: voters.to_vec(),
            initialize_sent: true,
        };
        if metadata.founding.get(&shard) != Some(&sent) {
            self.metadata.put_founding(shard, &sent).await?;
        }
        let members = voters
            .iter()
            .map(|node| node_pb::ReplicaMember {
                node_id: node.0,
                address: metadata.address_of(*node),
            })
            .collect();
        let initialized = self
            .bounded(
                self.admin(metadata, founder)?
                    .initialize_shard(self.request(node_pb::InitializeShardRequest {
                        shard_id: shard.0,
                        members,
                    })),
            )
            .await
            .map_err(|status| self.call_failed(metadata, founder, status))?
            .into_inner()
            .initialized;
        if !initialized {
            tracing::info!(%shard, %founder, "the founder's replica was initialized already");
        }
        Ok(())
    }
}
