//! Fault-injection scenarios with checked histories (etcd's robustness tests, Jepsen): while
//! clients get, put, compare-and-set, delete and run transactions through the gateways, a
//! nemesis kills, pauses, partitions and slows the cluster's processes. After each scenario
//! the faults are healed, every key is read through every gateway, the whole history must
//! be linearizable, and every replica of every shard must hold the same data.
//!
//! `CAIRN_NEMESIS_PROFILE=soak` runs more rounds of longer faults with more clients; the
//! default, `short`, fits the normal test run (docs/testing.md).

use cairn_proto::kv::v1::kv_client::KvClient;
use cairn_test_harness::workload::{assert_linearizable, read_every_key, Clock, Running, Workload};
use cairn_test_harness::{sibling_binary, wait_for, Cluster, LinkFault, Role};
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::time::Duration;
use tonic::transport::Channel;

const GATEWAY: &str = env!("CARGO_BIN_EXE_cairn-gateway");
const WAIT: Duration = Duration::from_secs(90);
const SHARDS: u32 = 3;
/// A follower cut off for seconds catches up by one snapshot of a few hundred keys in well
/// under a second; this much longer means it is stuck.
const CATCH_UP_WAIT: Duration = Duration::from_secs(30);
const KEYS: [&str; 6] = ["n/a", "n/b", "n/c", "n/d", "n/e", "n/f"];

const COORDINATOR_ENV: &[(&str, &str)] = &[
    ("CAIRN_SUSPECT_AFTER_MS", "1500"),
    ("CAIRN_DOWN_AFTER_MS", "3000"),
    ("CAIRN_RECONCILE_INTERVAL_MS", "200"),
];
const NODE_ENV: &[(&str, &str)] = &[("CAIRN_COORDINATOR__HEARTBEAT_INTERVAL_MS", "300")];

/// How long and how often the nemesis strikes.
#[derive(Clone, Copy, Debug)]
struct Profile {
    /// Fault rounds per scenario.
    rounds: u32,
    /// How long each fault lasts; longer than an election timeout (2 s at most).
    fault: Duration,
    /// Quiet time before the first fault and after each heal.
    calm: Duration,
    /// Concurrent clients.
    clients: u64,
}

fn profile() -> Profile {
    match std::env::var("CAIRN_NEMESIS_PROFILE").as_deref() {
        Ok("soak") => Profile {
            rounds: 6,
            fault: Duration::from_secs(6),
            calm: Duration::from_secs(3),
            clients: 10,
        },
        Ok("short") | Err(_) => Profile {
            rounds: 1,
            fault: Duration::from_millis(3_000),
            calm: Duration::from_millis(1_500),
            clients: 6,
        },
        Ok(other) => panic!("CAIRN_NEMESIS_PROFILE is short or soak, not {other:?}"),
    }
}

/// The seed of the nemesis's and the clients' random choices: `CAIRN_NEMESIS_SEED` replays
/// a run, otherwise each run draws a new one (and logs it), so that CI explores over time.
fn seed() -> u64 {
    match std::env::var("CAIRN_NEMESIS_SEED") {
        Ok(seed) => seed.parse().expect("CAIRN_NEMESIS_SEED is a u64"),
        Err(_) => rand::random(),
    }
}

/// A proxied cluster under a recorded workload.
struct Scenario {
    name: &'static str,
    cluster: Cluster,
    gateways: Vec<KvClient<Channel>>,
    clock: Clock,
    running: Option<Running>,
    profile: Profile,
    rng: rand::rngs::StdRng,
}

impl Scenario {
    async fn start(name: &'static str, coordinators: u64, nodes: u64, gateways: u64) -> Scenario {
        let profile = profile();
        let seed = seed();
        tracing::info!(
            name,
            ?profile,
            "--- start the cluster, {nodes} nodes behind proxies; CAIRN_NEMESIS_SEED={seed} replays the choices"
        );
        let gateway = Path::new(GATEWAY);
        let mut cluster = Cluster::start_with_network_faults(
            &sibling_binary(gateway, "cairn-node"),
            &sibling_binary(gateway, "cairn-coordinator"),
            coordinators,
            nodes,
            SHARDS,
            3,
            COORDINATOR_ENV,
            NODE_ENV,
        )
        .await;
        wait_all_shards_led(&cluster).await;
        let mut clients = Vec::new();
        for id in 1..=gateways {
            cluster.add_gateway(id);
            clients.push(cluster.gateway_clients(id, WAIT).await.0);
        }
        let clock = Clock::new();
        let workload = Workload {
            keys: KEYS.iter().map(|k| k.to_string()).collect(),
            clients: profile.clients,
            seed,
        };
        tracing::info!("--- {} clients start", profile.clients);
        let running = workload.start(&clients, clock);
        tokio::time::sleep(profile.calm).await;
        Scenario {
            name,
            cluster,
            gateways: clients,
            clock,
            running: Some(running),
            profile,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    /// The harness id of the node leading the shard of `key`.
    async fn leader_of_key(&self, key: &str) -> u64 {
        let shard = cairn_types::sharding::shard_for_key(key.as_bytes(), SHARDS).0;
        self.cluster.wait_for_leader(shard, WAIT).await
    }

    /// Waits until a node other than `victim` leads `shard` (as that node reports it).
    async fn wait_for_leader_other_than(&self, shard: u64, victim: u64, what: &str) -> u64 {
        let cluster = &self.cluster;
        let rest: Vec<u64> = node_ids(cluster)
            .into_iter()
            .filter(|id| *id != victim)
            .collect();
        let rest = &rest;
        wait_for(what, WAIT, || async move {
            cluster.leader_among(shard, rest).await
        })
        .await
    }

    /// Lets the fault act while the clients run (the nemesis schedule, not a wait for state).
    async fn hold_fault(&self) {
        tokio::time::sleep(self.profile.fault).await;
    }

    async fn calm(&self) {
        tokio::time::sleep(self.profile.calm).await;
    }

    /// Heals, stops the clients, reads every key through every gateway, checks the history
    /// and compares the replicas. Returns the number of operations checked.
    async fn finish(mut self) -> usize {
        tracing::info!("--- heal, and stop the clients");
        self.cluster.heal();
        wait_all_shards_led(&self.cluster).await;
        let mut history = self.running.take().expect("running").finish().await;
        let unknown = history.iter().filter(|op| op.returned.is_none()).count();

        tracing::info!("--- read every key through every gateway");
        let keys: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
        history.extend(read_every_key(&self.gateways, &keys, self.clock, 1_000).await);

        tracing::info!(operations = history.len(), unknown, "--- check the history");
        let checked = assert_linearizable(&history, self.cluster.root(), self.name);
        let writes = history
            .iter()
            .filter(|op| op.returned.is_some() && op.input != cairn_linearizability::Input::Get)
            .count();
        assert!(
            writes > 20,
            "{}: the clients made progress: {writes} acknowledged writes",
            self.name
        );

        tracing::info!("--- every replica of every shard holds the same data");
        let keys_compared = self.cluster.assert_replicas_identical(WAIT).await;
        tracing::info!(
            scenario = self.name,
            operations = checked,
            unknown,
            keys_compared,
            "scenario passed"
        );
        checked
    }
}

async fn wait_all_shards_led(cluster: &Cluster) {
    wait_for("every shard placed with a leader", WAIT, || async move {
        let status = cluster.cluster_status().await?;
        (status.shards.len() == SHARDS as usize
            && status
                .shards
                .iter()
                .all(|s| s.voters.len() == 3 && s.leader_node_id != 0))
        .then_some(())
    })
    .await;
    for shard in 0..u64::from(SHARDS) {
        cluster.wait_for_leader(shard, WAIT).await;
    }
}

fn node(id: u64) -> (Role, u64) {
    (Role::Node, id)
}

/// Every node but `id`, and every gateway: "the others" of `id`.
fn others_of(cluster: &Cluster, id: u64) -> Vec<(Role, u64)> {
    cluster
        .nodes
        .iter()
        .filter(|p| p.role == Role::Gateway || (p.role == Role::Node && p.id != id))
        .map(|p| (p.role, p.id))
        .collect()
}

fn node_ids(cluster: &Cluster) -> Vec<u64> {
    cluster
        .nodes
        .iter()
        .filter(|p| p.role == Role::Node)
        .map(|p| p.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_when_leaders_are_killed() {
    let mut scenario = Scenario::start("leader-kill", 1, 3, 2).await;
    for round in 0..scenario.profile.rounds {
        let victim = scenario
            .leader_of_key(KEYS[round as usize % KEYS.len()])
            .await;
        tracing::info!(round, victim, "--- kill -9 the leader");
        scenario.cluster.kill(victim);
        scenario.hold_fault().await;
        tracing::info!(round, victim, "--- restart it");
        scenario.cluster.restart(victim);
        scenario.calm().await;
    }
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_under_random_kills() {
    let mut scenario = Scenario::start("random-kills", 1, 3, 2).await;
    // Two kills per round in the short profile too: different nodes, overlapping restarts.
    for round in 0..scenario.profile.rounds * 2 {
        let ids = node_ids(&scenario.cluster);
        let victim = ids[scenario.rng.random_range(0..ids.len())];
        tracing::info!(round, victim, "--- kill -9 a random node");
        scenario.cluster.kill(victim);
        tokio::time::sleep(scenario.profile.fault / 2).await;
        scenario.cluster.restart(victim);
        wait_all_shards_led(&scenario.cluster).await;
    }
    scenario.calm().await;
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_when_the_leader_is_paused() {
    let mut scenario = Scenario::start("leader-pause", 1, 3, 2).await;
    for round in 0..scenario.profile.rounds {
        let key = KEYS[round as usize % KEYS.len()];
        let shard = cairn_types::sharding::shard_for_key(key.as_bytes(), SHARDS).0;
        let victim = scenario.leader_of_key(key).await;
        tracing::info!(round, victim, "--- SIGSTOP the leader of shard {shard}");
        scenario.cluster.pause(Role::Node, victim);
        scenario
            .wait_for_leader_other_than(
                shard,
                victim,
                "another node to lead while the leader is paused",
            )
            .await;
        scenario.hold_fault().await;
        tracing::info!(
            round,
            victim,
            "--- SIGCONT: the old leader wakes up believing it leads"
        );
        scenario.cluster.resume(Role::Node, victim);
        scenario.calm().await;
    }
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_when_the_leader_is_partitioned() {
    let scenario = Scenario::start("leader-partition", 1, 3, 2).await;
    for round in 0..scenario.profile.rounds {
        let key = KEYS[round as usize % KEYS.len()];
        let shard = cairn_types::sharding::shard_for_key(key.as_bytes(), SHARDS).0;
        let victim = scenario.leader_of_key(key).await;
        let peers: Vec<(Role, u64)> = node_ids(&scenario.cluster)
            .into_iter()
            .filter(|id| *id != victim)
            .map(node)
            .collect();
        tracing::info!(
            round,
            victim,
            "--- cut the leader off from the other nodes; gateways still reach it"
        );
        scenario.cluster.partition(&[node(victim)], &peers);
        scenario
            .wait_for_leader_other_than(shard, victim, "the majority to elect a leader of its own")
            .await;
        scenario.hold_fault().await;
        scenario.cluster.heal();
        scenario.calm().await;

        let victim = scenario.leader_of_key(key).await;
        tracing::info!(
            round,
            victim,
            "--- cut the new leader off from everyone (nodes and gateways)"
        );
        scenario
            .cluster
            .partition(&[node(victim)], &others_of(&scenario.cluster, victim));
        scenario.hold_fault().await;
        scenario.cluster.heal();
        scenario.calm().await;
    }
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_over_one_way_and_lossy_links() {
    let scenario = Scenario::start("one-way-and-lossy", 1, 3, 2).await;
    for round in 0..scenario.profile.rounds {
        let key = KEYS[round as usize % KEYS.len()];
        let victim = scenario.leader_of_key(key).await;
        let peers: Vec<(Role, u64)> = node_ids(&scenario.cluster)
            .into_iter()
            .filter(|id| *id != victim)
            .map(node)
            .collect();
        tracing::info!(
            round,
            victim,
            "--- one way: the leader hears its followers but cannot reach them"
        );
        scenario.cluster.partition_one_way(&[node(victim)], &peers);
        scenario.hold_fault().await;
        scenario.cluster.heal();
        scenario.calm().await;

        tracing::info!(
            round,
            "--- one way: nothing reaches the leader; it still sends"
        );
        let victim = scenario.leader_of_key(key).await;
        let others = others_of(&scenario.cluster, victim);
        scenario.cluster.partition_one_way(&others, &[node(victim)]);
        scenario.hold_fault().await;
        scenario.cluster.heal();
        scenario.calm().await;

        tracing::info!(
            round,
            "--- every link to a node slow (20 ms) or lossy (3% of chunks cut)"
        );
        let ids = node_ids(&scenario.cluster);
        let sources: Vec<(Role, u64)> = ids
            .iter()
            .map(|id| node(*id))
            .chain([(Role::Gateway, 1), (Role::Gateway, 2)])
            .collect();
        for (i, from) in sources.iter().enumerate() {
            for to in &ids {
                if *from == node(*to) {
                    continue;
                }
                let fault = if i % 2 == 0 {
                    LinkFault::Delay(Duration::from_millis(20))
                } else {
                    LinkFault::Drop(0.03)
                };
                scenario.cluster.set_link(*from, node(*to), fault);
            }
        }
        scenario.hold_fault().await;
        scenario.cluster.heal();
        scenario.calm().await;
    }
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_replica_catches_up_by_snapshot_and_histories_stay_linearizable() {
    let scenario = Scenario::start("snapshot-catch-up", 1, 3, 2).await;
    for round in 0..scenario.profile.rounds {
        let key = KEYS[round as usize % KEYS.len()];
        let shard = cairn_types::sharding::shard_for_key(key.as_bytes(), SHARDS).0;
        let leader = scenario.leader_of_key(key).await;
        let ids = node_ids(&scenario.cluster);
        let lagging = *ids.iter().find(|id| **id != leader).expect("a follower");
        tracing::info!(
            round,
            shard,
            leader,
            lagging,
            "--- cut a follower off from everyone"
        );
        scenario
            .cluster
            .partition(&[node(lagging)], &others_of(&scenario.cluster, lagging));
        let cut_at = scenario
            .cluster
            .status(lagging, shard)
            .await
            .expect("the follower's status");
        let cluster = &scenario.cluster;
        wait_for(
            "the shard to commit past the cut-off follower",
            WAIT,
            || async move {
                let status = cluster.status(leader, shard).await?;
                (status.committed_index > cut_at.last_log_index + 10).then_some(())
            },
        )
        .await;

        tracing::info!(
            round,
            "--- snapshot and purge the log on the connected replicas"
        );
        for id in ids.iter().filter(|id| **id != lagging) {
            scenario
                .cluster
                .trigger_snapshot(*id, shard, true)
                .await
                .expect("snapshot");
        }
        let current_leader = scenario.cluster.wait_for_leader(shard, WAIT).await;
        let purged = wait_for(
            "the leader to purge past the follower's log",
            WAIT,
            || async move {
                let status = cluster.status(current_leader, shard).await?;
                (status.purged_index > cut_at.last_log_index).then_some(status.purged_index)
            },
        )
        .await;
        scenario.hold_fault().await;

        tracing::info!(
            round,
            purged,
            "--- heal: the follower needs the snapshot, its log is gone"
        );
        scenario.cluster.heal();
        let healed_at = std::time::Instant::now();
        let status = wait_for(
            "the follower to install a snapshot and catch up",
            CATCH_UP_WAIT,
            || async move {
                let leader = cluster.status(current_leader, shard).await?;
                let follower = cluster.status(lagging, shard).await?;
                (follower.snapshot_index >= purged
                    && follower.applied_index >= leader.committed_index.min(purged))
                .then_some(follower)
            },
        )
        .await;
        tracing::info!(elapsed = ?healed_at.elapsed(), "caught up by snapshot");
        assert!(
            status.snapshot_index >= purged && status.snapshot_index > cut_at.snapshot_index,
            "node {lagging} caught up by snapshot: snapshot index {} (before {}), purged {purged}",
            status.snapshot_index,
            cut_at.snapshot_index
        );
        scenario.calm().await;
    }
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_when_the_coordinator_leader_dies_during_rebalancing() {
    let mut scenario = Scenario::start("coordinator-loss-rebalancing", 3, 3, 2).await;
    tracing::info!("--- a fourth node joins: the coordinators start moving replicas to it");
    scenario.cluster.add_node(4, NODE_ENV);
    let cluster = &scenario.cluster;
    let leader = wait_for("a replica move in flight", WAIT, || async move {
        let status = cluster.cluster_status().await?;
        (status.moves_in_flight > 0 || status.shards.iter().any(|s| !s.learners.is_empty()))
            .then_some(status.coordinator_leader_id)
    })
    .await;
    tracing::info!(leader, "--- kill -9 the coordinator leader mid-move");
    scenario.cluster.kill_coordinator(leader);
    scenario.hold_fault().await;
    scenario.cluster.restart_coordinator(leader);

    let cluster = &scenario.cluster;
    wait_for(
        "the new node to hold replicas with no move pending",
        WAIT,
        || async move {
            let status = cluster.cluster_status().await?;
            let new_node = cluster.cluster_id_of(&status, 4)?;
            let held = status
                .shards
                .iter()
                .filter(|s| s.voters.contains(&new_node))
                .count();
            (held > 0
                && status.moves_in_flight == 0
                && status
                    .shards
                    .iter()
                    .all(|s| s.learners.is_empty() && s.voters.len() == 3))
            .then_some(())
        },
    )
    .await;
    scenario.calm().await;
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_when_a_gateway_dies_mid_request() {
    let mut scenario = Scenario::start("gateway-kill", 1, 3, 2).await;
    for round in 0..scenario.profile.rounds {
        tracing::info!(round, "--- kill -9 gateway 1 with requests in flight");
        scenario.cluster.kill_gateway(1);
        scenario.hold_fault().await;
        scenario.cluster.restart_gateway(1);
        scenario.cluster.gateway_clients(1, WAIT).await;
        scenario.calm().await;
    }
    scenario.finish().await;
}

/// One fault of the mixed schedule.
#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill(u64),
    Pause(u64),
    Isolate(u64),
    CannotSend(u64),
    SlowAndLossyLinks,
    KillGateway(u64),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_stay_linearizable_under_a_random_mix_of_faults() {
    let mut scenario = Scenario::start("random-mix", 1, 3, 2).await;
    for round in 0..scenario.profile.rounds * 3 {
        let ids = node_ids(&scenario.cluster);
        let target = ids[scenario.rng.random_range(0..ids.len())];
        let fault = match scenario.rng.random_range(0..6) {
            0 => Fault::Kill(target),
            1 => Fault::Pause(target),
            2 => Fault::Isolate(target),
            3 => Fault::CannotSend(target),
            4 => Fault::SlowAndLossyLinks,
            _ => Fault::KillGateway(scenario.rng.random_range(1..=2)),
        };
        tracing::info!(round, ?fault, "--- nemesis strikes");
        let cluster = &mut scenario.cluster;
        match fault {
            Fault::Kill(id) => cluster.kill(id),
            Fault::Pause(id) => cluster.pause(Role::Node, id),
            Fault::Isolate(id) => cluster.partition(&[node(id)], &others_of(cluster, id)),
            Fault::CannotSend(id) => {
                let others = others_of(cluster, id);
                cluster.partition_one_way(&[node(id)], &others);
            }
            Fault::SlowAndLossyLinks => {
                for from in &ids {
                    for to in ids.iter().filter(|to| *to != from) {
                        let fault = if (from + to) % 2 == 0 {
                            LinkFault::Delay(Duration::from_millis(30))
                        } else {
                            LinkFault::Drop(0.05)
                        };
                        cluster.set_link(node(*from), node(*to), fault);
                    }
                }
            }
            Fault::KillGateway(id) => cluster.kill_gateway(id),
        }
        scenario.hold_fault().await;
        tracing::info!(round, ?fault, "--- undo it");
        let cluster = &mut scenario.cluster;
        match fault {
            Fault::Kill(id) => cluster.restart(id),
            Fault::Pause(id) => cluster.resume(Role::Node, id),
            Fault::Isolate(_) | Fault::CannotSend(_) | Fault::SlowAndLossyLinks => cluster.heal(),
            Fault::KillGateway(id) => {
                cluster.restart_gateway(id);
                cluster.gateway_clients(id, WAIT).await;
            }
        }
        wait_all_shards_led(&scenario.cluster).await;
        scenario.calm().await;
    }
    scenario.finish().await;
}
