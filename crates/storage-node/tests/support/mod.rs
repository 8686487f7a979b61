//! The in-process storage node the service tests talk to over gRPC: one node bootstrapped
//! alone with two shards, started on a free port, returned once both replicas lead.
// Shared by several test binaries, each of which uses only part of it.
#![allow(dead_code)]

use cairn_proto::node::v1 as node;
use cairn_proto::node::v1::node_admin_client::NodeAdminClient;
use cairn_proto::node::v1::shard_kv_client::ShardKvClient;
use cairn_storage_node::config::{BootstrapConfig, NodeConfig};
use cairn_test_harness::wait_for;
use std::time::Duration;
use tonic::transport::Channel;

pub struct TestNode {
    pub kv: ShardKvClient<Channel>,
    pub admin: NodeAdminClient<Channel>,
    _dir: tempfile::TempDir,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestNode {
    pub async fn stop(mut self) {
        let _ = self.stop.take().expect("running").send(());
        let _ = tokio::time::timeout(Duration::from_secs(20), &mut self.server).await;
    }
}

pub const SHARD: u64 = 0;

pub async fn start_node(adjust: impl FnOnce(&mut NodeConfig)) -> TestNode {
    cairn_test_harness::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let mut config = NodeConfig {
        node_id: 1,
        listen_address: address.clone(),
        data_dir: dir.path().to_path_buf(),
        bootstrap: Some(BootstrapConfig {
            shard_count: 2,
            members: vec![format!("1={address}")],
        }),
        ..NodeConfig::default()
    };
    adjust(&mut config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cairn_storage_node::run_with_listener(
        config,
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let channel = wait_for(
        "the node to accept connections",
        Duration::from_secs(20),
        || {
            let address = address.clone();
            async move {
                Channel::from_shared(format!("http://{address}"))
                    .ok()?
                    .connect()
                    .await
                    .ok()
            }
        },
    )
    .await;
    let mut admin = NodeAdminClient::new(channel.clone());
    for shard in [0, 1] {
        wait_for(
            "the single replica to lead",
            Duration::from_secs(20),
            || {
                let mut admin = admin.clone();
                async move {
                    let status = admin
                        .shard_status(node::ShardStatusRequest {
                            shard_id: shard,
                            all: false,
                        })
                        .await
                        .ok()?;
                    (status.into_inner().replicas.first()?.role == node::ReplicaRole::Leader as i32)
                        .then_some(())
                }
            },
        )
        .await;
    }
    let _ = &mut admin;
    TestNode {
        kv: ShardKvClient::new(channel),
        admin,
        _dir: dir,
        stop: Some(stop),
        server,
    }
}
