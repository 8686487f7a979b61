"""Checks the Helm chart with real helm 4 and helm 3: lint, schema and template errors, validation
of the rendered objects against two Kubernetes versions' schemas, and the wiring between them:
the names, selectors, ports and addresses each object gives another must meet.

Run through scripts/test-deploy.sh (it provides helm and kubernetes-validate).
"""

import json
import os
import re
import subprocess
import tempfile
import tomllib
from pathlib import Path

import pytest

from render import (
    CHART, NAMESPACE, RELEASE, ROOT, by_kind, config_files, helm_binaries, named, pod_specs,
    render, selects, template_error, template_text, workloads,
)

KUBERNETES_VERSIONS = ["1.33.0", "1.35.0"]

# Values combinations that must render and validate.
COMBINATIONS = {
    "defaults": {},
    "one-coordinator": {"coordinator": {"replicas": 1}},
    "tls": {"tls": {"enabled": True, "internalSecretName": "cairn-internal-tls", "clientSecretName": "cairn-client-tls"}},
    "tls-per-role": {"tls": {"enabled": True, "nodeSecretName": "node-tls", "coordinatorSecretName": "coordinator-tls", "gatewaySecretName": "gateway-tls", "requireClientCertificates": True}},
    "cert-manager": {"tls": {"enabled": True, "certManager": {"enabled": True, "issuerRef": {"name": "cairn-ca", "kind": "ClusterIssuer"}, "gatewayDnsNames": ["cairn.example.com"]}}},
    "load-balancer": {"gateway": {"service": {"type": "LoadBalancer", "nodePort": 30700, "loadBalancerSourceRanges": ["10.0.0.0/8"], "externalTrafficPolicy": "Local"}}},
    "node-port": {"gateway": {"service": {"type": "NodePort"}}},
    "autoscaling": {"gateway": {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 9}}},
    "monitoring": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}, "grafana": {"dashboards": {"enabled": True}}},
    "five-nodes-no-zone": {"node": {"replicas": 5, "zonePodLabel": "", "podAntiAffinity": "soft"}, "coordinator": {"replicas": 5}},
    "tuned": {
        "tracing": {"otlpEndpoint": "http://otel-collector.monitoring:4317", "samplingRatio": 0.5},
        "node": {"config": {"rocksdb": {"block_cache_bytes": 1073741824}, "raft": {"linearizable_reads": "read_index"}}},
        "coordinator": {"config": {"down_after_ms": 30000}},
        "gateway": {"config": {"attempts_max": 5}},
        "cluster": {"shardCount": 64, "replicationFactor": 5},
    },
}
COMBINATIONS["tuned"]["node"]["replicas"] = 5

# Values that must be rejected, and a word of the reason helm must give.
REJECTED = {
    "two coordinators": ({"coordinator": {"replicas": 2}}, "coordinator.replicas"),
    "replicas as text": ({"node": {"replicas": "three"}}, "node.replicas"),
    "no shards": ({"cluster": {"shardCount": 0}}, "shardCount"),
    "eight replicas": ({"cluster": {"replicationFactor": 8}}, "replicationFactor"),
    "unknown service type": ({"gateway": {"service": {"type": "Ingress"}}}, "type"),
    "misspelt key": ({"node": {"replica": 3}}, "replica"),
    "sampling above one": ({"tracing": {"samplingRatio": 2}}, "samplingRatio"),
    "bad port": ({"gateway": {"ports": {"grpc": 70000}}}, "grpc"),
    "fewer nodes than replicas": ({"node": {"replicas": 2}}, "node.replicas (2) must be at least cluster.replicationFactor (3)"),
    "tls without a secret": ({"tls": {"enabled": True}}, "tls.internalSecretName"),
    "cert-manager without an issuer": ({"tls": {"enabled": True, "certManager": {"enabled": True}}}, "issuerRef.name"),
    "autoscaling upside down": ({"gateway": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}}, "minReplicas"),
    "node port on ClusterIP": ({"gateway": {"service": {"nodePort": 30001}}}, "nodePort"),
    "data_dir overridden": ({"node": {"config": {"data_dir": "/elsewhere"}}}, "data_dir"),
    "bad anti-affinity": ({"node": {"podAntiAffinity": "always"}}, "podAntiAffinity"),
}


@pytest.fixture(scope="module", params=[name for name, _ in helm_binaries()])
def helm(request):
    return dict(helm_binaries())[request.param]


def write_values(values, folder):
    import yaml

    path = Path(folder) / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_lint_strict(helm, combination):
    with tempfile.TemporaryDirectory() as folder:
        values = write_values(COMBINATIONS[combination], folder)
        result = subprocess.run([helm, "lint", "--strict", str(CHART), "-f", str(values)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_impossible_values_are_rejected(helm, case):
    values, reason = REJECTED[case]
    error = template_error(values, helm)
    assert error is not None, f"{case}: rendered, but must be rejected"
    # helm 4 names a field as /node/replicas, helm 3 as node.replicas.
    assert reason in error.replace("/", "."), f"{case}: helm said {error!r}, which does not name {reason!r}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_rendered_objects_validate_against_kubernetes_schemas(helm, combination, version):
    objects = render(COMBINATIONS[combination], helm)
    # The ServiceMonitor is a Prometheus Operator resource, outside Kubernetes' schemas: it is
    # checked by test_service_monitor_scrapes_every_metrics_port instead, and kept out of the
    # file given to the validator so that no "Couldn't find schema" can hide another problem.
    import yaml

    # So is cert-manager's Certificate (test_cert_manager_certificates_carry_roles_and_names).
    kept = [item for item in objects if item["kind"] not in ("ServiceMonitor", "Certificate")]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "rendered.yaml"
        path.write_text(yaml.safe_dump_all(kept))
        validator = os.environ.get("KUBERNETES_VALIDATE", "kubernetes-validate")
        result = subprocess.run([validator, "--strict", "-k", version, str(path)], capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # kubernetes-validate only warns, with exit code 0, on a kind or apiVersion it has no schema
    # for (for example one removed in that version): that is a failure here.
    assert "Couldn't find schema" not in output, output
    passed = [line for line in output.splitlines() if " passed for resource " in line]
    assert len(passed) == len(kept), output
    assert not [line for line in output.splitlines() if line.strip() and " passed for resource " not in line], output


def containers(spec):
    return spec.get("initContainers", []) + spec["containers"]


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_statefulsets_name_their_headless_services_which_select_their_pods(combination):
    objects = render(COMBINATIONS[combination])
    services = {item["metadata"]["name"]: item for item in by_kind(objects, "Service")}
    sets = by_kind(objects, "StatefulSet")
    assert {item["metadata"]["name"] for item in sets} == {f"{RELEASE}-cairn-coordinator", f"{RELEASE}-cairn-node"}
    for item in sets:
        service = services[item["spec"]["serviceName"]]
        assert service["spec"]["clusterIP"] == "None"
        # Peers must resolve each other while they start, before any is ready.
        assert service["spec"]["publishNotReadyAddresses"] is True
        labels = item["spec"]["template"]["metadata"]["labels"]
        assert selects(service["spec"]["selector"], labels)
        assert selects(item["spec"]["selector"], labels)
        assert item["spec"]["podManagementPolicy"] == "Parallel"
        claims = item["spec"]["volumeClaimTemplates"]
        assert [claim["metadata"]["name"] for claim in claims] == ["data"]
        mounts = item["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        assert {"name": "data", "mountPath": "/data"} in mounts


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_every_pdb_and_service_selects_exactly_the_pods_it_means(combination):
    objects = render(COMBINATIONS[combination])
    pods = {name: labels for name, labels, _ in pod_specs(objects)}
    role_of = {name: labels.get("app.kubernetes.io/component") for name, labels in pods.items()}
    for budget in by_kind(objects, "PodDisruptionBudget"):
        chosen = {name for name, labels in pods.items() if selects(budget["spec"]["selector"], labels)}
        role = budget["metadata"]["name"].rsplit("-", 1)[-1]
        assert chosen == {name for name, r in role_of.items() if r == role and not name.endswith("test-put-get")}, budget["metadata"]["name"]
        assert budget["spec"]["maxUnavailable"] == 1
    for service in by_kind(objects, "Service"):
        name = service["metadata"]["name"]
        role = name.removesuffix("-headless").rsplit("-", 1)[-1]
        chosen = {pod for pod, labels in pods.items() if selects(service["spec"]["selector"], labels)}
        assert chosen == {f"{RELEASE}-cairn-{role}"}, name
        workload = [item for item in workloads(objects) if item["metadata"]["name"] == f"{RELEASE}-cairn-{role}"][0]
        container_ports = {port["name"]: port["containerPort"] for port in workload["spec"]["template"]["spec"]["containers"][0]["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports, f"{name}: {port}"


def toml_of(objects, role):
    return tomllib.loads(config_files(objects)[f"{role}.toml"])


def port_of(address):
    return int(address.rsplit(":", 1)[1])


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_probes_and_ports_are_the_ones_the_binaries_listen_on(combination):
    objects = render(COMBINATIONS[combination])
    for workload in workloads(objects):
        role = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        config = toml_of(objects, role)
        spec = workload["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports["grpc"] == port_of(config["listen_address"])
        assert ports["metrics"] == port_of(config["metrics_listen_address"])
        assert config["listen_address"].startswith("0.0.0.0:")
        for probe, path in (("startupProbe", "/livez"), ("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
            assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, (role, probe)
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == ports["metrics"]
        assert annotations["prometheus.io/path"] == "/metrics"
        assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
        # The container reads the file the ConfigMap holds for its role.
        assert f"--config=/etc/cairn/{role}.toml" in container["args"]
        mount = [m for m in container["volumeMounts"] if m["mountPath"] == f"/etc/cairn/{role}.toml"][0]
        assert mount["subPath"] == f"{role}.toml"


def resolve(objects, address):
    """The pod (workload name, ordinal) or Service a cluster DNS address names, and its port."""
    host, port = address.rsplit(":", 1)
    port = int(port)
    suffix = f".{NAMESPACE}.svc.cluster.local"
    assert host.endswith(suffix), f"{address} is not a name in namespace {NAMESPACE}"
    parts = host[: -len(suffix)].split(".")
    services = {item["metadata"]["name"]: item for item in by_kind(objects, "Service")}
    if len(parts) == 2:
        pod, service_name = parts
        service = services[service_name]
        assert service["spec"]["clusterIP"] == "None", f"{address}: a pod name under a Service that is not headless"
        owners = [item for item in by_kind(objects, "StatefulSet") if item["spec"]["serviceName"] == service_name]
        assert len(owners) == 1, address
        owner = owners[0]
        workload, ordinal = pod.rsplit("-", 1)
        assert workload == owner["metadata"]["name"], address
        assert 0 <= int(ordinal) < owner["spec"]["replicas"], f"{address}: no such pod"
        container = owner["spec"]["template"]["spec"]["containers"][0]
        assert port in [p["containerPort"] for p in container["ports"]], address
        assert port in [p["port"] for p in service["spec"]["ports"]], address
        return ("pod", workload, int(ordinal))
    (service_name,) = parts
    service = services[service_name]
    assert port in [p["port"] for p in service["spec"]["ports"]], address
    return ("service", service_name, None)


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_the_addresses_each_binary_is_given_resolve_to_the_services_the_chart_creates(combination):
    values = COMBINATIONS[combination]
    objects = render(values)
    coordinators = named(objects, "StatefulSet", f"{RELEASE}-cairn-coordinator")
    count = coordinators["spec"]["replicas"]
    config = toml_of(objects, "coordinator")
    members = config["members"]
    assert len(members) == count
    for index, member in enumerate(members):
        member_id, address = member.split("=", 1)
        # Pod <set>-N is member N+1 (--member-id-from-ordinal).
        assert resolve(objects, address) == ("pod", f"{RELEASE}-cairn-coordinator", int(member_id) - 1)
        assert int(member_id) == index + 1
    assert "--member-id-from-ordinal=$(POD_NAME)" in coordinators["spec"]["template"]["spec"]["containers"][0]["args"]
    for role, field in (("node", ("coordinator", "addresses")), ("gateway", ("coordinators",))):
        addresses = toml_of(objects, role)
        for key in field:
            addresses = addresses[key]
        assert sorted(resolve(objects, a)[2] for a in addresses) == list(range(count)), role
    # The node advertises its own stable name under the node headless Service.
    nodes = named(objects, "StatefulSet", f"{RELEASE}-cairn-node")
    container = nodes["spec"]["template"]["spec"]["containers"][0]
    (advertise,) = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--advertise-address=")]
    for ordinal in range(nodes["spec"]["replicas"]):
        address = advertise.replace("$(POD_NAME)", f"{RELEASE}-cairn-node-{ordinal}").replace("$(POD_NAMESPACE)", NAMESPACE)
        assert resolve(objects, address) == ("pod", f"{RELEASE}-cairn-node", ordinal)
    env = {item["name"]: item for item in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    zone_label = values.get("node", {}).get("zonePodLabel", "topology.kubernetes.io/zone")
    if zone_label:
        assert "--labels=zone=$(POD_ZONE)" in container["args"]
        assert env["POD_ZONE"]["valueFrom"]["fieldRef"]["fieldPath"] == f"metadata.labels['{zone_label}']"
    else:
        assert "POD_ZONE" not in env and not [a for a in container["args"] if a.startswith("--labels")]
    # The helm test pod talks to the gateway Service.
    (test_pod,) = by_kind(objects, "Pod")
    for step in containers(test_pod["spec"]):
        (endpoints,) = [a.split("=", 1)[1] for a in step["args"] if a.startswith("--endpoints=")]
        assert resolve(objects, endpoints) == ("service", f"{RELEASE}-cairn-gateway", None)


def test_configuration_values_reach_the_toml_files():
    objects = render(COMBINATIONS["tuned"])
    node, coordinator, gateway = (toml_of(objects, role) for role in ("node", "coordinator", "gateway"))
    assert node["rocksdb"]["block_cache_bytes"] == 1073741824
    assert node["raft"]["linearizable_reads"] == "read_index"
    assert coordinator["down_after_ms"] == 30000
    assert coordinator["shard_count"] == 64 and coordinator["replication_factor"] == 5
    assert gateway["attempts_max"] == 5
    for config in (node, coordinator, gateway):
        assert config["tracing"] == {"otlp_endpoint": "http://otel-collector.monitoring:4317", "sampling_ratio": 0.5}
        assert config["log"]["format"] == "json"
    # The chart's own keys survive a user's table that shares their section.
    assert len(node["coordinator"]["addresses"]) == 3


@pytest.mark.parametrize("combination", sorted(COMBINATIONS))
def test_every_container_runs_restricted(combination):
    objects = render(COMBINATIONS[combination])
    for owner, _, spec in pod_specs(objects):
        assert spec["securityContext"]["runAsNonRoot"] is True, owner
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert spec["enableServiceLinks"] is False, f"{owner}: service links would add CAIRN_* variables"
        for container in containers(spec):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, owner
            assert context["readOnlyRootFilesystem"] is True, owner
            assert context["capabilities"]["drop"] == ["ALL"], owner
            assert "memory" in container["resources"]["limits"], owner


def test_spreading_and_anti_affinity_select_the_pods_of_their_own_role():
    objects = render({})
    for workload in workloads(objects):
        spec = workload["spec"]["template"]["spec"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        anti = spec["affinity"]["podAntiAffinity"]
        terms = anti.get("requiredDuringSchedulingIgnoredDuringExecution") or [
            term["podAffinityTerm"] for term in anti["preferredDuringSchedulingIgnoredDuringExecution"]
        ]
        for term in terms:
            assert term["topologyKey"] == "kubernetes.io/hostname"
            assert selects(term["labelSelector"], labels)
        for constraint in spec["topologySpreadConstraints"]:
            assert constraint["topologyKey"] == "topology.kubernetes.io/zone"
            assert selects(constraint["labelSelector"], labels)
    nodes = named(objects, "StatefulSet", f"{RELEASE}-cairn-node")
    assert "requiredDuringSchedulingIgnoredDuringExecution" in nodes["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]


def test_gateway_service_types_and_autoscaling():
    load_balancer = named(render(COMBINATIONS["load-balancer"]), "Service", f"{RELEASE}-cairn-gateway")
    assert load_balancer["spec"]["type"] == "LoadBalancer"
    assert load_balancer["spec"]["ports"][0]["nodePort"] == 30700
    assert load_balancer["spec"]["loadBalancerSourceRanges"] == ["10.0.0.0/8"]
    cluster_ip = named(render({}), "Service", f"{RELEASE}-cairn-gateway")
    assert cluster_ip["spec"]["type"] == "ClusterIP"
    assert [p["name"] for p in cluster_ip["spec"]["ports"]] == ["grpc"], "the client Service exposes no metrics"
    objects = render(COMBINATIONS["autoscaling"])
    (autoscaler,) = by_kind(objects, "HorizontalPodAutoscaler")
    target = autoscaler["spec"]["scaleTargetRef"]
    assert named(objects, target["kind"], target["name"])
    assert "replicas" not in named(objects, "Deployment", f"{RELEASE}-cairn-gateway")["spec"]
    assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == (3, 9)
    assert not by_kind(render({}), "HorizontalPodAutoscaler")


def test_service_monitor_scrapes_every_metrics_port_and_dashboards_match_deploy_grafana():
    objects = render(COMBINATIONS["monitoring"])
    (monitor,) = by_kind(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    selected = [s for s in by_kind(objects, "Service") if selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
    assert sorted(s["metadata"]["name"] for s in selected) == sorted(
        f"{RELEASE}-cairn-{role}-headless" for role in ("coordinator", "node", "gateway"))
    for service in selected:
        assert "metrics" in [p["name"] for p in service["spec"]["ports"]]
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    (dashboards,) = [c for c in by_kind(objects, "ConfigMap") if c["metadata"]["name"].endswith("-dashboards")]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
    assert shipped
    assert sorted(dashboards["data"]) == sorted(f"cairn-{path.name}" for path in shipped)
    for path in shipped:
        assert json.loads(dashboards["data"][f"cairn-{path.name}"]) == json.loads(path.read_text()), path.name
        assert (CHART / "dashboards" / path.name).read_text() == path.read_text(), f"{path.name}: copy it into the chart again"
    assert not by_kind(render({}), "ServiceMonitor")


def test_tls_secrets_are_mounted_in_every_server_container():
    objects = render(COMBINATIONS["tls"])
    for workload in workloads(objects):
        spec = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["tls-internal"]["secret"]["secretName"] == "cairn-internal-tls"
        mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
        assert mounts["tls-internal"]["mountPath"] == "/etc/cairn/tls/internal"
        assert mounts["tls-internal"]["readOnly"] is True
    gateway = named(objects, "Deployment", f"{RELEASE}-cairn-gateway")["spec"]["template"]["spec"]
    assert {v["name"]: v for v in gateway["volumes"]}["tls-client"]["secret"]["secretName"] == "cairn-client-tls"
    for workload in workloads(render({})):
        assert "tls-internal" not in {v["name"] for v in workload["spec"]["template"]["spec"]["volumes"]}


def test_one_coordinator_is_a_group_of_one():
    objects = render(COMBINATIONS["one-coordinator"])
    assert toml_of(objects, "coordinator")["members"] == [
        f"1={RELEASE}-cairn-coordinator-0.{RELEASE}-cairn-coordinator-headless.{NAMESPACE}.svc.cluster.local:7001"]
    assert len(toml_of(objects, "gateway")["coordinators"]) == 1


def test_notes_tell_how_to_reach_the_gateway_and_run_cairnctl():
    helm = dict(helm_binaries())["helm4"]
    result = subprocess.run(
        [helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client"],
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert f"{RELEASE}-cairn-gateway.{NAMESPACE}.svc.cluster.local:7000" in notes
    assert "cairnctl --endpoints=" in notes
    assert "port-forward service/demo-cairn-gateway" in notes
    assert "cairnctl leave" in notes


def test_each_role_reads_its_own_certificate_and_the_gateway_asks_clients_for_one():
    objects = render(COMBINATIONS["tls-per-role"])
    for role, kind in [("node", "StatefulSet"), ("coordinator", "StatefulSet"), ("gateway", "Deployment")]:
        spec = named(objects, kind, f"{RELEASE}-cairn-{role}")["spec"]["template"]["spec"]
        assert {v["name"]: v for v in spec["volumes"]}["tls-internal"]["secret"]["secretName"] == f"{role}-tls"
        tls = toml_of(objects, role)["tls"]
        assert tls == {
            "cert_file": "/etc/cairn/tls/internal/tls.crt",
            "key_file": "/etc/cairn/tls/internal/tls.key",
            "ca_file": "/etc/cairn/tls/internal/ca.crt",
        }
    assert toml_of(objects, "gateway")["public_tls"] == {"client_auth": "required"}
    assert "public_tls" not in toml_of(objects, "node")
    # A separate client certificate is the public port's own, with its CA for client certificates.
    public = toml_of(render(COMBINATIONS["tls"]), "gateway")["public_tls"]
    assert public == {
        "cert_file": "/etc/cairn/tls/client/tls.crt",
        "key_file": "/etc/cairn/tls/client/tls.key",
        "client_ca_file": "/etc/cairn/tls/client/ca.crt",
        "client_auth": "none",
    }
    assert "tls" not in toml_of(render({}), "node")


def test_cert_manager_certificates_carry_roles_and_names():
    objects = render(COMBINATIONS["cert-manager"])
    certificates = {c["metadata"]["name"]: c for c in by_kind(objects, "Certificate")}
    assert sorted(certificates) == [f"{RELEASE}-cairn-{role}" for role in ("coordinator", "gateway", "node")]
    for role in ("node", "coordinator", "gateway"):
        certificate = certificates[f"{RELEASE}-cairn-{role}"]
        assert certificate["apiVersion"] == "cert-manager.io/v1"
        spec = certificate["spec"]
        assert spec["uris"] == [f"spiffe://cairn/role/{role}"]
        assert {"server auth", "client auth"} <= set(spec["usages"])
        assert spec["issuerRef"]["name"] == "cairn-ca" and spec["issuerRef"]["kind"] == "ClusterIssuer"
        kind = "Deployment" if role == "gateway" else "StatefulSet"
        pod = named(objects, kind, f"{RELEASE}-cairn-{role}")["spec"]["template"]["spec"]
        assert {v["name"]: v for v in pod["volumes"]}["tls-internal"]["secret"]["secretName"] == spec["secretName"]
    # Every coordinator address the processes dial matches the coordinators' wildcard name.
    wildcard = certificates[f"{RELEASE}-cairn-coordinator"]["spec"]["dnsNames"][0]
    for address in toml_of(objects, "node")["coordinator"]["addresses"]:
        host = address.rsplit(":", 1)[0]
        assert host.split(".", 1)[1] == wildcard.split(".", 1)[1], (host, wildcard)
    gateway_names = certificates[f"{RELEASE}-cairn-gateway"]["spec"]["dnsNames"]
    assert f"{RELEASE}-cairn-gateway.{NAMESPACE}.svc.cluster.local" in gateway_names
    assert "cairn.example.com" in gateway_names
    assert not by_kind(render(COMBINATIONS["tls"]), "Certificate")
