//! A fault-injection scenario with a checked history (etcd's robustness tests, Jepsen): a
//! cluster behind proxies, clients getting, putting, comparing-and-setting, deleting and
//! running transactions through every gateway, and a nemesis striking meanwhile. `finish`
//! heals, reads every key through every gateway, checks that the whole history is
//! linearizable and that every replica of every shard holds the same data.
//!
//! `CAIRN_NEMESIS_PROFILE=soak` runs more rounds of longer faults with more clients; the
//! default, `short`, fits the normal test run. `CAIRN_NEMESIS_SEED` replays the random
//! choices of a run (docs/testing.md).

use crate::nemesis::Nemesis;
use crate::workload::{assert_linearizable, read_every_key, Clock, Running, Workload};
use crate::{wait_for, Cluster, ClusterSpec};
use cairn_proto::kv::v1::kv_client::KvClient;
use cairn_types::{NodeId, ShardId};
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tonic::transport::Channel;

/// How long a scenario waits on the cluster (placement, leaders, replicas to converge).
pub const SCENARIO_WAIT: Duration = Duration::from_secs(90);
/// The keys the clients work on: few, so that operations contend.
const KEYS: [&str; 6] = ["n/a", "n/b", "n/c", "n/d", "n/e", "n/f"];
/// Acknowledged writes a scenario must see at least, or the clients made no progress.
const WRITES_MIN: usize = 20;

/// How long and how often the nemesis strikes.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    /// Fault rounds per scenario.
    pub rounds: u32,
    /// How long each fault lasts; longer than an election timeout (2 s at most).
    pub fault: Duration,
    /// Quiet time before the first fault and after each heal.
    pub calm: Duration,
    /// Concurrent clients.
    pub clients: u64,
}

impl Profile {
    /// The profile `CAIRN_NEMESIS_PROFILE` names: `short` (the default) or `soak`.
    pub fn from_env() -> Profile {
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
}

/// The seed of the nemesis's and the clients' random choices: `CAIRN_NEMESIS_SEED` replays
/// a run, otherwise each run draws a new one (and logs it), so that CI explores over time.
fn seed() -> u64 {
    match std::env::var("CAIRN_NEMESIS_SEED") {
        Ok(seed) => seed.parse().expect("CAIRN_NEMESIS_SEED is a u64"),
        Err(_) => rand::random(),
    }
}

/// The longest time in `[from, to]` (microseconds of the history's clock) during which some
/// key saw no operation succeed: how long the clients of that key were stalled. Failed
/// operations do not count as progress.
pub fn longest_stall(history: &[cairn_linearizability::Operation], from: u64, to: u64) -> Duration {
    let mut by_key: std::collections::BTreeMap<&str, Vec<u64>> = std::collections::BTreeMap::new();
    for operation in history {
        if let Some((at, _)) = &operation.returned {
            by_key.entry(operation.key.as_str()).or_default().push(*at);
        }
    }
    let mut longest = 0;
    for times in by_key.values_mut() {
        times.retain(|at| (from..=to).contains(at));
        times.sort_unstable();
        let mut previous = from;
        for at in times.iter().copied().chain(std::iter::once(to)) {
            longest = longest.max(at.saturating_sub(previous));
            previous = at;
        }
    }
    Duration::from_micros(longest)
}

/// A proxied cluster under a recorded workload.
pub struct Scenario {
    pub name: &'static str,
    pub cluster: Cluster,
    pub profile: Profile,
    /// Draws the nemesis's choices (seeded like the clients).
    pub rng: rand::rngs::StdRng,
    gateways: Vec<KvClient<Channel>>,
    clock: Clock,
    running: Option<Running>,
}

impl Scenario {
    /// Starts the cluster of `spec` behind proxies (with at least one gateway), waits until
    /// every shard has a leader, starts the clients on every gateway, and lets them run for
    /// the profile's calm time.
    pub async fn start(name: &'static str, spec: ClusterSpec) -> Scenario {
        assert!(spec.gateways > 0, "a scenario's clients need a gateway");
        let profile = Profile::from_env();
        let seed = seed();
        tracing::info!(
            name,
            ?profile,
            "--- start the cluster, {} nodes behind proxies; CAIRN_NEMESIS_SEED={seed} replays the choices",
            spec.nodes
        );
        let cluster = spec.network_faults().start().await;
        cluster.wait_for_every_leader(SCENARIO_WAIT).await;
        let mut gateways = Vec::new();
        for number in cluster.gateway_numbers() {
            gateways.push(cluster.gateway_clients(number, SCENARIO_WAIT).await.0);
        }
        let clock = Clock::new();
        let workload = Workload {
            keys: KEYS.iter().map(|k| k.to_string()).collect(),
            clients: profile.clients,
            seed,
        };
        tracing::info!("--- {} clients start", profile.clients);
        let running = workload.start(&gateways, clock);
        tokio::time::sleep(profile.calm).await;
        Scenario {
            name,
            cluster,
            profile,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            gateways,
            clock,
            running: Some(running),
        }
    }

    /// The key a round works on: the rounds go through the keys in turn.
    pub fn key(&self, round: u32) -> &'static str {
        KEYS[round as usize % KEYS.len()]
    }

    pub fn shard_of(&self, key: &str) -> ShardId {
        cairn_types::sharding::shard_for_key(key.as_bytes(), self.cluster.shard_count())
    }

    /// The node leading the shard of `key`.
    pub async fn leader_of_key(&self, key: &str) -> NodeId {
        self.cluster
            .wait_for_leader(self.shard_of(key), SCENARIO_WAIT)
            .await
    }

    /// A node drawn at random.
    pub fn random_node(&mut self) -> NodeId {
        let nodes = self.cluster.node_ids();
        nodes[self.rng.random_range(0..nodes.len())]
    }

    /// Waits until a node other than `victim` leads `shard` (as that node reports it).
    pub async fn wait_for_leader_other_than(
        &self,
        shard: ShardId,
        victim: NodeId,
        what: &str,
    ) -> NodeId {
        let cluster = &self.cluster;
        let rest: Vec<NodeId> = cluster
            .node_ids()
            .into_iter()
            .filter(|id| *id != victim)
            .collect();
        let rest = &rest;
        wait_for(what, SCENARIO_WAIT, || async move {
            cluster.leader_among(shard, rest).await
        })
        .await
    }

    pub async fn inject(&mut self, nemesis: &mut dyn Nemesis) {
        tracing::info!(scenario = self.name, ?nemesis, "--- the nemesis strikes");
        nemesis.inject(&mut self.cluster).await;
    }

    pub async fn heal(&mut self, nemesis: &mut dyn Nemesis) {
        tracing::info!(scenario = self.name, ?nemesis, "--- heal");
        nemesis.heal(&mut self.cluster).await;
    }

    /// One round: inject, let the fault act, heal, and let the cluster recover.
    pub async fn strike(&mut self, mut nemesis: impl Nemesis) {
        self.inject(&mut nemesis).await;
        self.hold_fault().await;
        self.heal(&mut nemesis).await;
        self.calm().await;
    }

    /// Lets the fault act while the clients run (the nemesis schedule, not a wait for state).
    pub async fn hold_fault(&self) {
        tokio::time::sleep(self.profile.fault).await;
    }

    /// Lets the clients run without a fault (the nemesis schedule, not a wait for state).
    pub async fn calm(&self) {
        tokio::time::sleep(self.profile.calm).await;
    }

    /// A client of each gateway, for workloads that run beside the recorded one (the bank).
    pub fn gateways(&self) -> &[KvClient<Channel>] {
        &self.gateways
    }

    /// The history's clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Microseconds on the history's clock: marks a window for `longest_stall`.
    pub fn now_micros(&self) -> u64 {
        self.clock.now()
    }

    /// Heals, stops the clients, reads every key through every gateway, checks the history
    /// and compares the replicas. Returns the number of operations checked.
    pub async fn finish(self) -> usize {
        self.finish_with_history().await.0
    }

    /// Like `finish`, and returns the checked history too.
    pub async fn finish_with_history(mut self) -> (usize, Vec<cairn_linearizability::Operation>) {
        tracing::info!("--- heal, and stop the clients");
        self.cluster.heal();
        self.cluster.wait_for_every_leader(SCENARIO_WAIT).await;
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
            writes > WRITES_MIN,
            "{}: the clients made progress: {writes} acknowledged writes",
            self.name
        );

        tracing::info!("--- every replica of every shard holds the same data");
        let keys_compared = self.cluster.assert_replicas_identical(SCENARIO_WAIT).await;
        tracing::info!(
            scenario = self.name,
            operations = checked,
            unknown,
            keys_compared,
            "scenario passed"
        );
        (checked, history)
    }
}
