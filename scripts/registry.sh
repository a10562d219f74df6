#!/usr/bin/env bash
# Start Debian's docker-registry on 127.0.0.1 with a free port and temporary
# storage, in the background. Prints "HOST:PORT PID DIR". Stop it with
#   kill PID; rm -rf DIR
set -euo pipefail
dir=$(mktemp -d /tmp/kanipy-registry.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$dir/config.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YAML
docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    if curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 || \
       python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/v2/', timeout=1)" 2>/dev/null; then
        echo "127.0.0.1:$port $pid $dir"
        exit 0
    fi
    sleep 0.1
done
echo "registry did not start; log in $dir/registry.log" >&2
kill "$pid" 2>/dev/null || true
exit 1
