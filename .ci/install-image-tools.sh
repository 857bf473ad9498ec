#!/usr/bin/env bash
# The tools the image test (tests/image, pytest -m image) builds and runs the Dockerfile with,
# all Debian packages: buildah (builds), podman (runs), runc (the OCI runtime that works in this
# sandbox; crun does not) and mmdebstrap (makes the base image from Debian packages, since no
# container registry is reachable here). Needs root (CI runs as root). Idempotent: installs only
# what is missing.
set -euo pipefail

PACKAGES=(buildah podman runc mmdebstrap ca-certificates)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-image-tools: ${PACKAGES[*]} already installed"
else
  started=$(date +%s)
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "install-image-tools: installed ${missing[*]} in $(($(date +%s) - started)) s"
fi

# Smoke checks: each tool runs and says its version.
buildah --version
podman --version
runc --version | head -n 1
mmdebstrap --version
