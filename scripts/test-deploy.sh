#!/usr/bin/env bash
# Checks the deployment: the Helm chart (lint with helm 4 and 3, schema and template errors,
# kubernetes-validate for two Kubernetes versions, the wiring between rendered objects), the
# rendered chart run as local processes (the cluster forms, scales out, keeps node ids), and the
# container image run as a compose cluster under faults. Tests: deploy/tests/*.py (pytest).
#
#   scripts/test-deploy.sh [--no-image] [PYTEST ARGS...]
#
#   --no-image  do not build the image (the compose test then needs cairn:dev already loaded,
#               and is skipped without it, except under CI=true)
#
# Called by scripts/test.sh after the Rust tests, with the debug binaries already built.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD_IMAGE=1
if [ "${1:-}" = "--no-image" ]; then
    BUILD_IMAGE=0
    shift
fi

source scripts/lib/prepare.sh
source scripts/lib/deploy-tools.sh
cairn_deploy_tools

# The rendered-pods test runs the debug binaries the test suite built.
cairn_build
export CAIRN_BIN_DIR="$CARGO_TARGET_DIR/debug"

export CAIRN_IMAGE="${CAIRN_IMAGE:-cairn:dev}"
if [ "$BUILD_IMAGE" = 1 ]; then
    if docker info >/dev/null 2>&1; then
        started=$SECONDS
        scripts/build-image.sh --load --tag "${CAIRN_IMAGE#*:}"
        echo "test-deploy: image built and loaded in $((SECONDS - started)) s" >&2
    elif [ "${CI:-}" = true ]; then
        echo "test-deploy: CI needs a Docker engine for the image and compose tests; none answers" >&2
        exit 1
    else
        echo "test-deploy: no Docker engine: the image is not built and the compose test will be skipped" >&2
    fi
fi

cd deploy/tests
exec "$CAIRN_TOOLS_PYTHON" -m pytest -p no:cacheprovider -ra "$@"
