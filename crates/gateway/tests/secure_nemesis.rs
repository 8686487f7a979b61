//! Fault scenarios with mutual TLS everywhere and authentication on (issue 18 item 7): a
//! leader kill and a leader partition, with the checked history of `nemesis.rs`. The clients
//! sign in by client certificate: the harness's certificate names the user `harness`, who
//! holds the root role; a client without a certificate is refused as `UNAUTHENTICATED` for
//! the whole scenario. Restarted and partitioned nodes rejoin their groups over TLS.

use cairn_proto::kv::v1 as pb;
use cairn_proto::kv::v1::auth_change_request::Op;
use cairn_proto::kv::v1::auth_client::AuthClient;
use cairn_proto::kv::v1::kv_client::KvClient;
use cairn_test_harness::nemesis::{Kill, Partition};
use cairn_test_harness::{lazy_channel, wait_for, ClusterSpec, Scenario, SCENARIO_WAIT};
use cairn_tls::ClientTls;
use std::path::Path;
use std::time::Duration;
use tonic::Code;

const GATEWAY: &str = env!("CARGO_BIN_EXE_cairn-gateway");
/// The user the harness's client certificate names (`tests/src/tls.rs`).
const HARNESS_USER: &str = "harness";

/// Three nodes behind proxies, two gateways asking clients for a certificate, TLS everywhere.
fn spec() -> ClusterSpec {
    ClusterSpec::new(Path::new(GATEWAY))
        .coordinators(1)
        .nodes(3)
        .gateways(2)
        .shards(3)
        .fast_failure_detection()
        .tls()
        .gateway_env(&[("CAIRN_PUBLIC_TLS__CLIENT_AUTH", "optional")])
}

/// Gives the harness's certificate user the root role, adds `root`, and turns auth on while
/// the scenario's clients run; returns once every gateway refuses a client without
/// credentials.
async fn enable_auth(scenario: &Scenario) {
    let cluster = &scenario.cluster;
    let mut auth = AuthClient::new(lazy_channel(
        &cluster.client_tls(),
        &cluster.gateway(1).address,
    ));
    let changes = [
        (Op::UserAdd, HARNESS_USER, "", ""),
        (Op::UserGrantRole, HARNESS_USER, "", "root"),
        (Op::UserAdd, "root", "root-password", ""),
        (Op::UserGrantRole, "root", "", "root"),
        (Op::AuthEnable, "", "", ""),
    ];
    for (op, user, password, role) in changes {
        let request = pb::AuthChangeRequest {
            op: op as i32,
            user: user.into(),
            password: password.into(),
            role: role.into(),
            ..Default::default()
        };
        auth.change(request.clone())
            .await
            .unwrap_or_else(|status| panic!("{request:?}: {status:?}"));
    }
    let ca_file = cluster.certificates().expect("a TLS cluster").ca_file();
    let anonymous = ClientTls::new(ca_file, None, Duration::from_millis(500)).expect("CA only");
    for number in cluster.gateway_numbers() {
        let mut kv = KvClient::new(lazy_channel(&anonymous, &cluster.gateway(number).address));
        wait_for(
            &format!("gateway {number} to refuse a client without credentials"),
            SCENARIO_WAIT,
            || {
                let mut kv = kv.clone();
                async move {
                    let answer = kv
                        .get(pb::GetRequest {
                            key: b"k0".to_vec(),
                            ..Default::default()
                        })
                        .await;
                    matches!(answer, Err(status) if status.code() == Code::Unauthenticated)
                        .then_some(())
                }
            },
        )
        .await;
        let refused = kv
            .put(pb::PutRequest {
                key: b"k0".to_vec(),
                value: b"anonymous".to_vec(),
                ..Default::default()
            })
            .await
            .expect_err("a put without credentials is refused");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_when_leaders_are_killed_with_tls_and_auth_on() {
    let mut scenario = Scenario::start("leader-kill-tls-auth", spec()).await;
    enable_auth(&scenario).await;
    for round in 0..scenario.profile.rounds {
        let victim = scenario.leader_of_key(scenario.key(round)).await;
        scenario.strike(Kill(victim.into())).await;
    }
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_when_the_leader_is_partitioned_with_tls_and_auth_on() {
    let mut scenario = Scenario::start("leader-partition-tls-auth", spec()).await;
    enable_auth(&scenario).await;
    for round in 0..scenario.profile.rounds {
        let key = scenario.key(round);
        let shard = scenario.shard_of(key);
        let victim = scenario.leader_of_key(key).await;
        tracing::info!(round, %victim, "--- cut the leader of {shard} off from the other nodes");
        let mut partition = Partition::from_peers(&scenario.cluster, victim);
        scenario.inject(&mut partition).await;
        scenario
            .wait_for_leader_other_than(shard, victim, "the majority to elect a leader of its own")
            .await;
        scenario.hold_fault().await;
        scenario.heal(&mut partition).await;
        scenario.calm().await;
    }
    scenario.finish().await;
}
