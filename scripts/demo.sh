#!/usr/bin/env bash
# The main job, end to end, on a fresh machine (as root): install everything,
# start a registry on loopback, push a busybox base image, build the
# examples/static-site Dockerfile with kanipy and push it, then check the
# result with tools that are not kanipy (skopeo, umoci, runc).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

read -r REGISTRY REG_PID REG_DIR < <(bash scripts/registry.sh)
work=$(mktemp -d /tmp/kanipy-demo.XXXXXX)
cleanup() { kill "$REG_PID" 2>/dev/null || true; rm -rf "$REG_DIR" "$work"; }
trap cleanup EXIT
echo "== registry on $REGISTRY" >&2

BASE=$(.venv/bin/python scripts/make_base_image.py --registry "$REGISTRY")
echo "== base image $BASE" >&2

DEST="$REGISTRY/demo/static-site:latest"
.venv/bin/kanipy build \
    --dockerfile examples/static-site/Dockerfile \
    --context examples/static-site \
    --build-arg "BASE=$BASE" \
    --insecure-registry "$REGISTRY" \
    --destination "$DEST"

echo "== skopeo inspect --config $DEST" >&2
skopeo inspect --tls-verify=false --config "docker://$DEST" | .venv/bin/python -m json.tool >&2
echo "== files of the image (umoci unpack)" >&2
skopeo copy --quiet --src-tls-verify=false "docker://$DEST" "oci:$work/layout:demo"
umoci unpack --image "$work/layout:demo" "$work/bundle" >/dev/null
ls -l "$work/bundle/rootfs/var/www" >&2
echo "== run it with runc: cat /var/www/index.html as the image's user" >&2
.venv/bin/python - "$work/bundle/config.json" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
spec["process"]["terminal"] = False
spec["process"]["args"] = ["cat", "/var/www/index.html"]
json.dump(spec, open(sys.argv[1], "w"))
PY
runc run --bundle "$work/bundle" "kanipy-demo-$$" </dev/null >&2
runc delete --force "kanipy-demo-$$" >/dev/null 2>&1 || true
echo "== demo: done" >&2
