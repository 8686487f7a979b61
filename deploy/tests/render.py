"""Renders the Helm chart with real helm binaries and reads the objects back.

Shared by the chart tests (test_chart.py) and the rendered-pods test (test_rendered_cluster.py).
The helm binaries come from scripts/lib/deploy-tools.sh (HELM4, HELM3 in the environment).
"""

import os
import subprocess
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "cairn"
RELEASE = "demo"
NAMESPACE = "db"


def helm_binaries():
    """(label, path) of every helm the environment names; the tests need both."""
    found = []
    for variable in ("HELM4", "HELM3"):
        path = os.environ.get(variable)
        if not path:
            raise RuntimeError(f"{variable} is not set: run the tests through scripts/test-deploy.sh")
        found.append((variable.lower(), path))
    return found


def helm4():
    return helm_binaries()[0][1]


def _values_file(values, folder):
    path = Path(folder) / "values.yaml"
    path.write_text(yaml.safe_dump(values or {}))
    return path


def template_text(values=None, helm=None, release=RELEASE, namespace=NAMESPACE, extra=()):
    """`helm template` output; raises CalledProcessError with helm's message when it fails."""
    with tempfile.TemporaryDirectory() as folder:
        command = [
            helm or helm4(), "template", release, str(CHART),
            "--namespace", namespace, "-f", str(_values_file(values, folder)), *extra,
        ]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def render(values=None, helm=None, release=RELEASE, namespace=NAMESPACE, extra=()):
    """The rendered objects, as dicts, hooks (the helm test pod) included."""
    text = template_text(values, helm, release, namespace, extra)
    return [document for document in yaml.safe_load_all(text) if document]


def template_error(values, helm=None):
    """helm's error message for values that must be rejected, or None if they render."""
    try:
        template_text(values, helm)
    except subprocess.CalledProcessError as error:
        return error.stderr
    return None


def by_kind(objects, kind):
    return [item for item in objects if item["kind"] == kind]


def named(objects, kind, name):
    matches = [item for item in objects if item["kind"] == kind and item["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def workloads(objects):
    return [item for item in objects if item["kind"] in ("StatefulSet", "Deployment")]


def pod_specs(objects):
    """(owner name, pod template labels, pod spec) of every workload and bare pod."""
    result = []
    for item in objects:
        if item["kind"] in ("StatefulSet", "Deployment"):
            template = item["spec"]["template"]
            result.append((item["metadata"]["name"], template["metadata"]["labels"], template["spec"]))
        elif item["kind"] == "Pod":
            result.append((item["metadata"]["name"], item["metadata"]["labels"], item["spec"]))
    return result


def selects(selector, labels):
    """Whether a matchLabels-style selector (or a Service's plain selector) selects labels."""
    selector = selector.get("matchLabels", selector) if "matchLabels" in selector else selector
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def config_files(objects):
    """The ConfigMap's files: {name: text}."""
    (config_map,) = [item for item in by_kind(objects, "ConfigMap") if item["metadata"]["name"].endswith("-config")]
    return config_map["data"]
