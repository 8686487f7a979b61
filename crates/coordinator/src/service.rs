//! The coordinator's gRPC service (`cairn.coordinator.v1.Coordinator`). Any member answers:
//! a follower passes unary requests on to the leader (once). Heartbeats and the map watch
//! are not passed on: a follower answers FAILED_PRECONDITION with a CoordinatorNotLeader
//! detail naming the leader's address, which nodes and watchers follow.

use crate::auth_store::AuthStore;
use crate::compaction::Compaction;
use crate::coordinator::Coordinator;
use crate::heartbeat::Heartbeat;
use crate::oracle::TimestampOracle;
use cairn_proto::coordinator::v1 as pb;
use cairn_proto::coordinator::v1::coordinator_client::CoordinatorClient;
use cairn_proto::coordinator::v1::coordinator_server::Coordinator as CoordinatorApi;
use cairn_raft::database::StorageEngine;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

/// Most shard maps queued for one watcher; the sender waits while a slow watcher catches up
/// (only the newest map matters, and the watch coalesces versions it skips).
const WATCH_QUEUE_MAX: usize = 16;

/// Marks a request a follower passed on, so it is never passed on twice.
const FORWARDED: &str = "x-cairn-forwarded";

pub struct CoordinatorService {
    coordinator: Arc<Coordinator>,
    oracle: Arc<TimestampOracle>,
    compaction: Arc<Compaction>,
    auth: AuthStore,
    /// How a follower reaches the leader to pass a request on.
    tls: cairn_tls::ClientTls,
}

impl CoordinatorService {
    pub fn new(
        coordinator: Arc<Coordinator>,
        oracle: Arc<TimestampOracle>,
        compaction: Arc<Compaction>,
    ) -> Self {
        let auth = AuthStore::new(coordinator.metadata.replica().clone());
        Self {
            coordinator,
            oracle,
            compaction,
            auth,
            tls: cairn_tls::ClientTls::plaintext(),
        }
    }

    /// The same, passing requests on to the leader through `tls`.
    pub fn with_tls(mut self, tls: cairn_tls::ClientTls) -> Self {
        self.tls = tls;
        self
    }

    /// On a follower, a client for the leader to pass the request on to (any member answers);
    /// `None` on the leader. A request that was already passed on is not passed on again.
    async fn leader_for<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<CoordinatorClient<Channel>>, Status> {
        if self.coordinator.is_leader() {
            return Ok(None);
        }
        if request.metadata().get(FORWARDED).is_some() {
            return Err(self.coordinator.not_leader().into());
        }
        let address = self
            .coordinator
            .leader_address()
            .ok_or_else(|| Status::from(self.coordinator.not_leader()))?;
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| Status::internal(format!("leader address {address}: {e}")))?
            .connect_timeout(FORWARD_TIMEOUT)
            .timeout(FORWARD_TIMEOUT);
        Ok(Some(CoordinatorClient::new(
            self.tls.connect_lazy(endpoint, None),
        )))
    }
}

/// `message` marked as passed on, carrying the trace context of the request it continues.
fn forwarded<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    cairn_trace_context::inject(request.metadata_mut());
    request
}

/// Longest a follower waits for the leader when passing a request on.
const FORWARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[tonic::async_trait]
impl CoordinatorApi for CoordinatorService {
    #[tracing::instrument(name = "coordinator.join", skip_all)]
    async fn join_cluster(
        &self,
        request: Request<pb::JoinClusterRequest>,
    ) -> Result<Response<pb::JoinClusterResponse>, Status> {
        if let Some(mut leader) = self.leader_for(&request).await? {
            return leader.join_cluster(forwarded(request.into_inner())).await;
        }
        Ok(Response::new(
            self.coordinator.join(request.into_inner()).await?,
        ))
    }

    #[tracing::instrument(name = "coordinator.leave", skip_all)]
    async fn leave_cluster(
        &self,
        request: Request<pb::LeaveClusterRequest>,
    ) -> Result<Response<pb::LeaveClusterResponse>, Status> {
        if let Some(mut leader) = self.leader_for(&request).await? {
            return leader.leave_cluster(forwarded(request.into_inner())).await;
        }
        self.coordinator.leave(request.into_inner().node_id).await?;
        Ok(Response::new(pb::LeaveClusterResponse { draining: true }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let heartbeat = Heartbeat::try_from(request.into_inner())?;
        self.coordinator.heartbeat(heartbeat).await?;
        Ok(Response::new(pb::HeartbeatResponse {
            compact_revision: self.compaction.point().await?.0,
        }))
    }

    async fn get_shard_map(
        &self,
        request: Request<pb::GetShardMapRequest>,
    ) -> Result<Response<pb::ShardMap>, Status> {
        if let Some(mut leader) = self.leader_for(&request).await? {
            return leader.get_shard_map(forwarded(request.into_inner())).await;
        }
        match self.coordinator.current_map() {
            Some(map) => Ok(Response::new(map)),
            None => Err(self.coordinator.not_leader().into()),
        }
    }

    type WatchShardMapStream =
        Pin<Box<dyn Stream<Item = Result<pb::ShardMap, Status>> + Send + 'static>>;

    async fn watch_shard_map(
        &self,
        request: Request<pb::WatchShardMapRequest>,
    ) -> Result<Response<Self::WatchShardMapStream>, Status> {
        let mut after = request.into_inner().after_version;
        let mut maps = self.coordinator.subscribe_map();
        if maps.borrow().is_none() {
            return Err(self.coordinator.not_leader().into());
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(WATCH_QUEUE_MAX);
        let coordinator = self.coordinator.clone();
        tokio::spawn(async move {
            loop {
                let current = maps.borrow_and_update().clone();
                match current {
                    // Leadership moved: end the stream so the watcher finds the new leader.
                    None => {
                        let _ = sender.send(Err(coordinator.not_leader().into())).await;
                        return;
                    }
                    Some(map) if map.version > after => {
                        after = map.version;
                        if sender.send(Ok(map)).await.is_err() {
                            return;
                        }
                    }
                    Some(_) => {}
                }
                if maps.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn cluster_status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        if let Some(mut leader) = self.leader_for(&request).await? {
            return leader.cluster_status(forwarded(request.into_inner())).await;
        }
        let Some(map) = self.coordinator.current_map() else {
            return Err(self.coordinator.not_leader().into());
        };
        let cluster = self.coordinator.cluster().await?;
        let stats = self.coordinator.stats();
        Ok(Response::new(pb::ClusterStatusResponse {
            cluster_id: cluster.cluster_id,
            shard_count: cluster.shard_count,
            replication_factor: cluster.replication_factor,
            coordinator_leader_id: self.coordinator.leader_id().unwrap_or(0),
            nodes: map.nodes,
            shards: map.shards,
            under_replicated_shards: stats.under_replicated_shards,
            moves_in_flight: stats.moves_in_flight,
            map_version: map.version,
            coordinator_storage_engine: match self.coordinator.config.storage.engine {
                StorageEngine::Disk => pb::StorageEngine::Disk,
                StorageEngine::Memory => pb::StorageEngine::Memory,
            } as i32,
            shards_without_quorum: self
                .coordinator
                .shards_without_quorum()
                .into_iter()
                .map(|lost| pb::ShardWithoutQuorum {
                    shard_id: lost.loss.shard.0,
                    voters: lost.loss.voters.iter().map(|n| n.0).collect(),
                    surviving_voters: lost.loss.surviving.iter().map(|n| n.0).collect(),
                    lost_for_ms: lost.since.elapsed().as_millis() as u64,
                })
                .collect(),
        }))
    }

    /// Not passed on from a follower: the caller goes to the leader itself (one hop less on
    /// every write's path), following the NotLeader hint.
    async fn get_timestamps(
        &self,
        request: Request<pb::GetTimestampsRequest>,
    ) -> Result<Response<pb::GetTimestampsResponse>, Status> {
        if !self.coordinator.is_leader() {
            return Err(self.coordinator.not_leader().into());
        }
        let count = request.into_inner().count;
        let timestamps = self.oracle.timestamps(u64::from(count)).await?;
        Ok(Response::new(pb::GetTimestampsResponse {
            first: timestamps.start.0,
            count,
        }))
    }

    #[tracing::instrument(name = "coordinator.unsafe_recover_shard", skip_all)]
    async fn unsafe_recover_shard(
        &self,
        request: Request<pb::UnsafeRecoverShardRequest>,
    ) -> Result<Response<pb::UnsafeRecoverShardResponse>, Status> {
        if let Some(mut leader) = self.leader_for(&request).await? {
            return leader
                .unsafe_recover_shard(forwarded(request.into_inner()))
                .await;
        }
        Ok(Response::new(
            self.coordinator
                .unsafe_recover_shard(request.into_inner())
                .await?,
        ))
    }

    #[tracing::instrument(name = "coordinator.compact", skip_all)]
    async fn compact(
        &self,
        request: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactResponse>, Status> {
        if let Some(mut leader) = self.leader_for(&request).await? {
            return leader.compact(forwarded(request.into_inner())).await;
        }
        let revision = cairn_types::Revision(request.into_inner().revision);
        let point = self.compaction.compact(revision).await?;
        Ok(Response::new(pb::CompactResponse {
            compact_revision: point.0,
        }))
    }

    #[tracing::instrument(name = "coordinator.change_auth", skip_all)]
    async fn change_auth(
        &self,
        request: Request<pb::ChangeAuthRequest>,
    ) -> Result<Response<cairn_proto::kv::v1::AuthChangeResponse>, Status> {
        if let Some(mut leader) = self.leader_for(&request).await? {
            return leader.change_auth(forwarded(request.into_inner())).await;
        }
        let request = request.into_inner();
        let acting_user = acting_user(&request.acting_user);
        let change = request
            .change
            .ok_or_else(|| Status::invalid_argument("change missing"))?;
        // Refuse a caller without root before spending a password hash on it.
        let action = "auth change";
        self.auth
            .state()
            .await?
            .check_admin(acting_user, action)
            .map_err(crate::error::CoordinatorError::from)?;
        let hashed = match change.password.as_str() {
            "" => None,
            password => Some(crate::auth_store::hash_password(password.to_string()).await?),
        };
        let change = cairn_auth::convert::change_from_proto(&change, |_| {
            hashed
                .clone()
                .ok_or_else(|| cairn_auth::AuthError::invalid("password", "must not be empty"))
        })
        .map_err(crate::error::CoordinatorError::from)?;
        let revision = self.auth.change(acting_user, change).await?;
        Ok(Response::new(cairn_proto::kv::v1::AuthChangeResponse {
            revision,
        }))
    }

    async fn auth_status(
        &self,
        request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<cairn_proto::kv::v1::AuthStatusResponse>, Status> {
        if let Some(mut leader) = self.leader_for(&request).await? {
            return leader.auth_status(forwarded(request.into_inner())).await;
        }
        let request = request.into_inner();
        let state = self.auth.state().await?;
        let listed = state
            .check_admin(acting_user(&request.acting_user), "list users and roles")
            .is_ok();
        Ok(Response::new(cairn_auth::convert::status_to_proto(
            &state, listed,
        )))
    }

    /// Answered by the leader only, like timestamps: gateways poll it and follow the hint.
    async fn get_auth_state(
        &self,
        request: Request<pb::GetAuthStateRequest>,
    ) -> Result<Response<pb::AuthState>, Status> {
        if !self.coordinator.is_leader() {
            return Err(self.coordinator.not_leader().into());
        }
        let after = request.into_inner().after_revision;
        let state = self.auth.state().await?;
        if after != 0 && state.revision == after {
            return Ok(Response::new(pb::AuthState {
                revision: after,
                unchanged: true,
                ..Default::default()
            }));
        }
        Ok(Response::new(pb::AuthState::from(&state)))
    }
}

/// The gateway sends an empty name for a caller without credentials.
fn acting_user(name: &str) -> Option<&str> {
    (!name.is_empty()).then_some(name)
}
