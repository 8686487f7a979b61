"""Runs the pods of a rendered chart as local processes, the way a kubelet would run them.

Each pod gets its own loopback address (its network namespace), its own folder (its volumes),
the exact command, args and env of its container spec (`$(VAR)` expanded as Kubernetes does,
`fieldRef`s answered from the pod's name, namespace and labels), and the ConfigMap files it mounts.
The cluster DNS names the chart gives the pods (`<pod>.<headless service>.<namespace>.svc.<domain>`
and `<service>.<namespace>.svc.<domain>`) are mapped to those loopback addresses, and `0.0.0.0` to
the pod's own address: that is the only rewriting done, and it is what the cluster's DNS and network
namespaces do for real pods. A Service with a virtual address gets one of its own, served by a
`ServiceProxy` that sends each new connection to a ready pod the Service selects, as kube-proxy does.
Stopping a pod follows the kubelet: out of the Service's endpoints, SIGTERM, SIGKILL after the pod's
`terminationGracePeriodSeconds`.
"""

import itertools
import os
import re
import selectors
import signal
import socket
import socketserver
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from render import by_kind, config_files

CLUSTER_DOMAIN = "cluster.local"


class Pod:
    def __init__(self, name, workload, container, spec, labels, ip, folder):
        self.name = name
        self.workload = workload
        self.container = container
        self.spec = spec
        self.labels = labels
        self.ip = ip
        self.folder = Path(folder)
        self.process = None
        self.log = None
        # Whether the pod is among its Services' endpoints: from its readiness probe passing
        # (wait_ready) until its termination starts.
        self.ready = False

    def port(self, name_or_number):
        if isinstance(name_or_number, int):
            return name_or_number
        for port in self.container["ports"]:
            if port["name"] == name_or_number:
                return port["containerPort"]
        raise KeyError(f"{self.name}: no port named {name_or_number}")

    def probe(self, kind):
        """Whether the container's probe of that kind (readinessProbe, ...) passes now."""
        http = self.container[kind]["httpGet"]
        url = f"http://{self.ip}:{self.port(http['port'])}{http['path']}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def kill(self, how=signal.SIGKILL):
        self.ready = False
        if self.alive():
            self.process.send_signal(how)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.log:
            self.log.close()
            self.log = None

    def terminate(self):
        """The kubelet's termination: the pod leaves its Services' endpoints, gets SIGTERM, and
        SIGKILL if it still runs after its terminationGracePeriodSeconds. Returns (exit code,
        seconds from SIGTERM to exit, whether it had to be killed)."""
        assert "lifecycle" not in self.container, f"{self.name}: a preStop hook is not emulated"
        self.ready = False
        grace = self.spec.get("terminationGracePeriodSeconds", 30)
        started = time.monotonic()
        killed = False
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            killed = True
            self.process.kill()
            self.process.wait(timeout=10)
        if self.log:
            self.log.close()
            self.log = None
        return self.process.returncode, time.monotonic() - started, killed

    def log_tail(self, lines=30):
        path = self.folder / "log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class ServiceProxy:
    """A Service's virtual address, as kube-proxy serves it: every new connection goes to one of
    the ready pods the Service selects (round robin), on the target port of the Service port it
    came to; with no ready pod the connection is refused (closed). Connections already open stay
    with their pod until either side closes them."""

    def __init__(self, ip, ports, endpoints):
        self.ip = ip
        self.endpoints = endpoints  # () -> ready pods, called for each connection
        self.turn = itertools.count()
        self.servers = []
        for port, target in ports.items():
            server = socketserver.ThreadingTCPServer((ip, port), self._handler(target), bind_and_activate=False)
            server.daemon_threads = True
            server.allow_reuse_address = True
            server.server_bind()
            server.server_activate()
            threading.Thread(target=server.serve_forever, name=f"service {ip}:{port}", daemon=True).start()
            self.servers.append(server)

    def _handler(self, target):
        proxy = self

        class Forward(socketserver.BaseRequestHandler):
            def handle(self):
                pods = proxy.endpoints()
                if not pods:
                    return
                pod = pods[next(proxy.turn) % len(pods)]
                try:
                    upstream = socket.create_connection((pod.ip, pod.port(target)), timeout=5)
                except OSError:
                    return
                with upstream:
                    upstream.settimeout(None)
                    pump(self.request, upstream)

        return Forward

    def close(self):
        for server in self.servers:
            server.shutdown()
            server.server_close()


def pump(one, other):
    """Copies bytes both ways until either side closes."""
    selector = selectors.DefaultSelector()
    selector.register(one, selectors.EVENT_READ, other)
    selector.register(other, selectors.EVENT_READ, one)
    try:
        while True:
            for key, _ in selector.select():
                try:
                    data = key.fileobj.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                key.data.sendall(data)
    except OSError:
        return
    finally:
        selector.close()


class Cluster:
    """The pods of the rendered objects, started as processes. Re-rendering keeps every pod's
    address and folder, so a pod started from a new rendering is the same pod with a new spec."""

    def __init__(self, bin_dir, root, namespace, pod_labels=None):
        self.bin_dir = Path(bin_dir)
        self.root = Path(root)
        self.namespace = namespace
        self.pod_labels = pod_labels or (lambda pod_name: {})
        self.addresses = {}
        self.pods = {}
        self.objects = []
        self.pods_removed = {}
        self.proxies = {}

    def address_of(self, pod_name):
        if pod_name not in self.addresses:
            self.addresses[pod_name] = f"127.0.10.{len(self.addresses) + 1}"
        return self.addresses[pod_name]

    def load(self, objects):
        """Takes a new rendering: the pods it describes replace the specs of the known ones."""
        self.objects = objects
        self.files = config_files(objects)
        pods = {}
        for item in objects:
            kind, name = item["kind"], item["metadata"]["name"]
            if kind == "StatefulSet":
                names = [f"{name}-{ordinal}" for ordinal in range(item["spec"]["replicas"])]
            elif kind == "Deployment":
                names = [f"{name}-{index}" for index in range(item["spec"].get("replicas", 1))]
            else:
                continue
            for pod_name in names:
                pod = self._pod(item, pod_name)
                old = self.pods.get(pod_name)
                if old is not None:
                    pod.process, pod.log, pod.ready = old.process, old.log, old.ready
                pods[pod_name] = pod
        for test_pod in by_kind(objects, "Pod"):
            pods[test_pod["metadata"]["name"]] = test_pod
        # Pods the new rendering no longer has: Kubernetes would stop them.
        self.pods_removed = {name: pod for name, pod in self.pods.items() if name not in pods and isinstance(pod, Pod)}
        self.pods = pods
        self._names()

    def _pod(self, workload, pod_name):
        template = workload["spec"]["template"]
        labels = dict(template["metadata"]["labels"], **self.pod_labels(pod_name))
        (container,) = template["spec"]["containers"]
        return Pod(pod_name, workload, container, template["spec"], labels, self.address_of(pod_name), self.root / pod_name)

    def surge(self, old_name, new_name):
        """A Deployment's rolling update with maxSurge 1 and maxUnavailable 0, for one pod: a
        new pod from the Deployment's current template starts and becomes ready, then the old
        one is terminated. Returns what `Pod.terminate` returns for the old pod."""
        old = self.pods[old_name]
        assert old.workload["kind"] == "Deployment", old_name
        strategy = old.workload["spec"]["strategy"]["rollingUpdate"]
        assert (strategy["maxSurge"], strategy["maxUnavailable"]) == (1, 0), strategy
        self.pods[new_name] = self._pod(old.workload, new_name)
        self.start(new_name)
        self.wait_ready([new_name], timeout=120)
        outcome = old.terminate()
        del self.pods[old_name]
        self.pods_removed[old_name] = old
        return outcome

    def _names(self):
        """The cluster DNS names, each mapped to (address, {service port: pod port})."""
        suffix = f".{self.namespace}.svc.{CLUSTER_DOMAIN}"
        names = {}
        services = by_kind(self.objects, "Service")
        for service in services:
            selected = [p for p in self.workload_pods() if all(p.labels.get(k) == v for k, v in service["spec"]["selector"].items())]
            service_name = service["metadata"]["name"]
            if service["spec"].get("clusterIP") == "None":
                for pod in selected:
                    names[f"{pod.name}.{service_name}{suffix}"] = (pod.ip, None)
            else:
                if service_name not in self.proxies:
                    ports = {port["port"]: port["targetPort"] for port in service["spec"]["ports"]}
                    self.proxies[service_name] = ServiceProxy(
                        self.address_of(f"service/{service_name}"), ports, self._endpoints(service["spec"]["selector"])
                    )
                # The proxy listens on the Service's own ports (kube-proxy maps them to target ports).
                names[f"{service_name}{suffix}"] = (self.proxies[service_name].ip, {port["port"]: port["port"] for port in service["spec"]["ports"]})
        self.names = names

    def _endpoints(self, selector):
        """The Service's ready endpoints, looked up when a connection arrives."""
        return lambda: [
            pod for pod in self.workload_pods() if pod.ready and pod.alive() and all(pod.labels.get(k) == v for k, v in selector.items())
        ]

    def workload_pods(self):
        # A copy first: the Service proxies' threads call this while the test replaces pods.
        return [pod for pod in list(self.pods.values()) if isinstance(pod, Pod)]

    def rewrite(self, text, own_ip=None):
        """What the pod's network does to an address: DNS names to addresses (a Service's to its
        proxy, which maps its ports to target ports), the wildcard address to the pod's own."""
        for name in sorted(self.names, key=len, reverse=True):
            ip, ports = self.names[name]

            def replace(match, ip=ip, ports=ports):
                port = int(match.group(1))
                if ports is not None:
                    if port not in ports:
                        raise AssertionError(f"{match.group(0)}: the Service has no port {port}")
                    port = ports[port]
                return f"{ip}:{port}"

            text = re.sub(re.escape(name) + r":(\d+)", replace, text)
        leftover = re.findall(r"[a-z0-9-]+(?:\.[a-z0-9-]+)*\.svc\." + re.escape(CLUSTER_DOMAIN) + r"(?::\d+)?", text)
        if leftover:
            raise AssertionError(f"addresses that resolve to no pod the chart creates: {leftover}")
        if own_ip is not None:
            text = text.replace("0.0.0.0:", f"{own_ip}:")
        return text

    def _field(self, pod_name, labels, path):
        if path == "metadata.name":
            return pod_name
        if path == "metadata.namespace":
            return self.namespace
        match = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
        if match:
            # Like the downward API: an absent label is an empty string.
            return labels.get(match.group(1), "")
        raise AssertionError(f"fieldRef {path} is not emulated")

    def command_line(self, pod_name, labels, container, folder, own_ip=None):
        """The container's command line and environment as the kubelet would run them, with the
        pod's mounts mapped into its folder."""
        env = {}
        for item in container.get("env", []):
            if "value" in item:
                value = item["value"]
            else:
                value = self._field(pod_name, labels, item["valueFrom"]["fieldRef"]["fieldPath"])
            env[item["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), value)
        mounts = {}
        for mount in container.get("volumeMounts", []):
            host = folder / "mounts" / mount["mountPath"].strip("/")
            if "subPath" in mount:
                host.parent.mkdir(parents=True, exist_ok=True)
                host.write_text(self.rewrite(self.files[mount["subPath"]], own_ip))
            else:
                host.mkdir(parents=True, exist_ok=True)
            mounts[mount["mountPath"]] = host
        def map_mounts(text):
            # One pass, so a folder that was just substituted is not substituted again: a mount
            # path counts where a path starts (after `=`, a quote, a space or line start).
            if not mounts:
                return text
            alternatives = "|".join(re.escape(path) for path in sorted(mounts, key=len, reverse=True))
            pattern = r'(^|[="\s])(' + alternatives + r')(?=["/\s]|$)'
            return re.sub(pattern, lambda m: m.group(1) + str(mounts[m.group(2)]), text, flags=re.MULTILINE)

        for path in list(mounts):
            # A mounted config file names the other mounts (data_dir = "/data").
            if mounts[path].is_file():
                mounts[path].write_text(map_mounts(mounts[path].read_text()))

        def expand(argument):
            # $(VAR) from the container's env, $$ escapes, unknown names stay as written.
            argument = re.sub(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), argument)
            argument = argument.replace("$$(", "$(")
            return self.rewrite(map_mounts(argument), own_ip)

        (binary,) = container["command"]
        assert binary.startswith("/usr/local/bin/"), binary
        command = [str(self.bin_dir / Path(binary).name)] + [expand(argument) for argument in container.get("args", [])]
        process_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        process_env.update(env)
        return command, process_env

    def start(self, pod_name):
        pod = self.pods[pod_name]
        assert not pod.alive(), f"{pod_name} is running"
        pod.ready = False
        pod.folder.mkdir(parents=True, exist_ok=True)
        command, env = self.command_line(pod.name, pod.labels, pod.container, pod.folder, pod.ip)
        (pod.folder / "command").write_text(" ".join(command) + "\n")
        pod.log = open(pod.folder / "log", "ab")
        pod.process = subprocess.Popen(command, env=env, stdout=pod.log, stderr=subprocess.STDOUT, cwd=pod.folder, start_new_session=True)
        return pod

    def run_test_pod(self, name, timeout=120):
        """Runs a bare pod (the helm test hook): init containers in order, then its container;
        returns the exit codes."""
        item = self.pods[name]
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        codes = []
        for container in item["spec"].get("initContainers", []) + item["spec"]["containers"]:
            command, env = self.command_line(name, item["metadata"]["labels"], container, folder)
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
            codes.append((container["name"], result.returncode, result.stdout + result.stderr))
            if result.returncode != 0:
                break
        return codes

    def wait_ready(self, pod_names, timeout):
        deadline = time.monotonic() + timeout
        waiting = list(pod_names)
        while waiting:
            for name in list(waiting):
                pod = self.pods[name]
                if not pod.alive():
                    raise AssertionError(f"{name} exited ({pod.process.returncode}):\n{pod.log_tail()}")
                if pod.probe("startupProbe") and pod.probe("livenessProbe") and pod.probe("readinessProbe"):
                    pod.ready = True
                    waiting.remove(name)
            if waiting and time.monotonic() > deadline:
                tails = "\n".join(f"--- {n}\n{self.pods[n].log_tail()}" for n in waiting)
                raise AssertionError(f"not ready after {timeout} s: {waiting}\n{tails}")
            time.sleep(0.5)

    def stop_all(self):
        for pod in self.workload_pods() + list(self.pods_removed.values()):
            if pod.alive():
                pod.kill(signal.SIGTERM)
            elif pod.log:
                pod.log.close()
        for proxy in self.proxies.values():
            proxy.close()
