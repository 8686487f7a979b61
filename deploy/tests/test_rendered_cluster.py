"""Proof that the rendered chart forms a working cluster (issue 17, item 6).

The chart is rendered by real helm; every pod's command, args, env and mounted files are taken
from the rendered objects and started as local processes (pods.py says exactly what stands in
for Kubernetes). Then: the cluster forms and every probe passes; the helm test hook pod writes
and reads a key; cairnctl through the gateway Service's address writes and reads; re-rendering
with one more node replica changes no existing pod and the new pod receives shard replicas; a
node pod killed and restarted with its folder keeps its node id and every acknowledged write.

Needs the debug binaries: CAIRN_BIN_DIR (scripts/test-deploy.sh sets it).
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pods import Cluster
from render import NAMESPACE, RELEASE, named, render

ZONES = ["zone-a", "zone-b", "zone-c"]
VALUES = {
    "coordinator": {"replicas": 3},
    "node": {"replicas": 3},
    "gateway": {"replicas": 1},
    "cluster": {"shardCount": 8},
    "log": {"format": "human"},
}
GATEWAY = f"{RELEASE}-cairn-gateway.{NAMESPACE}.svc.cluster.local:7000"
COORDINATORS = [f"{RELEASE}-cairn-coordinator-{i}" for i in range(3)]
NODES = [f"{RELEASE}-cairn-node-{i}" for i in range(4)]


def node_zone(pod_name):
    """The zone label Kubernetes' PodTopologyLabels admission would copy onto a node pod."""
    if pod_name.startswith(f"{RELEASE}-cairn-node-"):
        return {"topology.kubernetes.io/zone": ZONES[int(pod_name.rsplit("-", 1)[1]) % len(ZONES)]}
    return {}


@pytest.fixture
def cluster(tmp_path):
    bin_dir = os.environ.get("CAIRN_BIN_DIR")
    if not bin_dir or not (Path(bin_dir) / "cairn-node").exists():
        pytest.fail("CAIRN_BIN_DIR must name the folder with cairn-node, cairn-coordinator, cairn-gateway and cairnctl")
    cluster = Cluster(bin_dir, tmp_path, NAMESPACE, node_zone)
    cluster.load(render(VALUES))
    yield cluster
    cluster.stop_all()


def cairnctl(cluster, *args, timeout="10s"):
    command = [str(cluster.bin_dir / "cairnctl"), f"--endpoints={cluster.rewrite(GATEWAY)}", f"--timeout={timeout}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def must(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def value_of(cluster, key):
    return json.loads(must(cairnctl(cluster, "--output", "json", "get", key, timeout="20s")))["value"]


def members(cluster):
    return json.loads(must(cairnctl(cluster, "--output", "json", "cluster", "members")))["members"]


def wait_for(what, check, timeout, cluster=None):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            state = ""
            if cluster is not None:
                state = must(cairnctl(cluster, "cluster", "members")) + must(cairnctl(cluster, "cluster", "shards"))
                state += must(cairnctl(cluster, "cluster", "status"))
            raise AssertionError(f"timed out after {timeout} s waiting until {what}\n{state}")
        time.sleep(0.5)


def test_the_rendered_pods_form_a_cluster_that_scales_out_and_in_and_keeps_node_ids(cluster):
    pods = COORDINATORS + NODES[:3] + [f"{RELEASE}-cairn-gateway-0"]
    assert sorted(cluster.workload_pods(), key=lambda p: p.name) and sorted(p.name for p in cluster.workload_pods()) == sorted(pods)

    # --- start every pod of the rendering and wait for its probes, as the kubelet would
    for name in pods:
        cluster.start(name)
    cluster.wait_ready(pods, timeout=180)

    # --- the helm test hook pod writes and reads its key through the gateway Service
    steps = cluster.run_test_pod(f"{RELEASE}-cairn-test-put-get")
    assert [(name, code) for name, code, _ in steps] == [("put", 0), ("get", 0)], steps

    # --- cairnctl through the gateway Service's address
    must(cairnctl(cluster, "put", "greeting", "hello"))
    assert value_of(cluster, "greeting") == "hello"
    acknowledged = {}
    for index in range(40):
        key, value = f"key-{index:03}", f"value-{index}"
        must(cairnctl(cluster, "put", key, value))
        acknowledged[key] = value

    # --- every node registered its pod's address and its zone
    known = wait_for("three nodes are up", lambda: (lambda m: m if len([x for x in m if x["state"] == "up"]) == 3 else None)(members(cluster)), 60)
    by_address = {member["address"]: member for member in known}
    for ordinal in range(3):
        pod = cluster.pods[NODES[ordinal]]
        member = by_address[f"{pod.ip}:7101"]
        assert member["labels"].get("zone") == ZONES[ordinal], member
    node_ids = {NODES[ordinal]: by_address[f"{cluster.pods[NODES[ordinal]].ip}:7101"]["node_id"] for ordinal in range(3)}

    # --- scale out: render again with one more node replica
    before = {pod.name: (pod.container, pod.spec, pod.labels) for pod in cluster.workload_pods()}
    scaled = dict(VALUES, node={"replicas": 4})
    cluster.load(render(scaled))
    for name, spec in before.items():
        now = cluster.pods[name]
        # Kubernetes restarts a pod whose template changed; none may change on a scale-out.
        assert (now.container, now.spec, now.labels) == spec, f"{name} changed on scale-out"
    assert named(cluster.objects, "StatefulSet", f"{RELEASE}-cairn-node")["spec"]["replicas"] == 4
    cluster.start(NODES[3])
    cluster.wait_ready([NODES[3]], timeout=120)
    new_address = f"{cluster.pods[NODES[3]].ip}:7101"

    def rebalanced():
        current = {member["address"]: member for member in members(cluster)}
        member = current.get(new_address)
        status = json.loads(must(cairnctl(cluster, "--output", "json", "cluster", "status")))
        if member and member["replica_count"] >= 4 and status["moves_in_flight"] == 0 and status["under_replicated_shards"] == 0:
            return member
        return None

    joined = wait_for("the new node holds shard replicas", rebalanced, 180, cluster)
    assert joined["labels"].get("zone") == ZONES[0]
    assert joined["node_id"] not in node_ids.values()

    # --- kill a node pod and start it again with its folder (its volume): same node id
    victim = cluster.pods[NODES[1]]
    victim.kill()
    cluster.start(NODES[1])
    cluster.wait_ready([NODES[1]], timeout=120)
    current = {member["address"]: member for member in members(cluster)}
    assert current[f"{victim.ip}:7101"]["node_id"] == node_ids[NODES[1]]
    assert (victim.folder / "mounts" / "data" / "node_id").read_text().strip() == str(node_ids[NODES[1]])
    wait_for("the restarted node is up", lambda: {m["address"]: m for m in members(cluster)}[f"{victim.ip}:7101"]["state"] == "up", 60)

    # --- scale in the documented way: drain the highest ordinal with `cairnctl leave`, wait until
    # the coordinator marks it left (every replica moved first, so no shard lost its quorum),
    # then render with one replica fewer, which removes exactly that pod
    must(cairnctl(cluster, "leave", str(joined["node_id"])))

    def drained():
        current = {member["address"]: member for member in members(cluster)}
        status = json.loads(must(cairnctl(cluster, "--output", "json", "cluster", "status")))
        member = current[new_address]
        return member["state"] == "left" and member["replica_count"] == 0 and status["under_replicated_shards"] == 0

    wait_for("the drained node is left", drained, 180, cluster)
    cluster.load(render(VALUES))
    assert NODES[3] not in cluster.pods
    gone = [pod for pod in before if pod not in cluster.pods]
    assert gone == [], gone
    victim_of_scale_in = cluster.pods_removed.pop(NODES[3])
    victim_of_scale_in.kill(signal.SIGTERM)

    # --- nothing acknowledged is lost
    for key, value in acknowledged.items():
        assert value_of(cluster, key) == value, key
