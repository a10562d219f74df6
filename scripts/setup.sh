#!/usr/bin/env bash
# Installs everything kanipy and its tests need on a fresh Debian machine:
# the real tools the tests check against, and a virtualenv in .venv with
# kanipy installed in editable mode. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    docker-registry   # the CNCF distribution registry the tests push to
    skopeo umoci runc # independent tools that check what kanipy produced
    buildah           # the peer builder the benchmarks and comparisons run
    busybox-static    # a tiny real base image, made without Docker Hub
    debootstrap       # a Debian base image for the examples and benchmarks
    git openssl apache2-utils ca-certificates zstd bzip2 xz-utils
    iproute2 util-linux procps
    python3-yaml      # the tests read examples/tekton with it (PyYAML is no kanipy dependency)
    python3-pip-whl   # pip for the tests' python base and pip workloads, from Debian
    golang-github-containers-common  # Docker's seccomp profile, for the CI-container tests
)

need_apt=0
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt=1
done
if [ "$need_apt" = 1 ]; then
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
    # Debian's docker-registry ships a system service listening on :5000; the
    # tests start their own registries on free loopback ports, so keep it off.
    if command -v systemctl >/dev/null 2>&1; then
        $SUDO systemctl mask docker-registry.service >/dev/null 2>&1 || true
    fi
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
        "${APT_PACKAGES[@]}"
    if command -v systemctl >/dev/null 2>&1; then
        $SUDO systemctl stop docker-registry.service >/dev/null 2>&1 || true
    fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[test]'
echo "setup: done (virtualenv in .venv, kanipy $(.venv/bin/kanipy version))" >&2
