#!/usr/bin/env bash
# Start one private Docker daemon for the test tiers and wait until it responds.
#
# Usage: start-dockerd.sh STATE_DIR
# Prints "export DOCKER_HOST=unix://..." on success. The daemon keeps its
# images in $DOCKER_DATA_ROOT (default STATE_DIR/data), so pointing that at a
# directory that outlives the run keeps the image cache warm between CI runs.
# Stop it with: kill "$(cat STATE_DIR/dockerd.pid)".
set -euo pipefail

state_dir=${1:?usage: start-dockerd.sh STATE_DIR}
mkdir -p "$state_dir"
state_dir=$(cd "$state_dir" && pwd)
data_root=${DOCKER_DATA_ROOT:-$state_dir/data}
socket="$state_dir/docker.sock"
pid_file="$state_dir/dockerd.pid"
wait_seconds=${DOCKERD_WAIT_SECONDS:-60}

if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
  echo "export DOCKER_HOST=unix://$socket"
  exit 0
fi
if ! command -v dockerd >/dev/null; then
  echo "start-dockerd: dockerd not found; install the docker.io package" >&2
  exit 2
fi

mkdir -p "$data_root" "$state_dir/exec"
# An empty config file, so a host /etc/docker/daemon.json cannot change the daemon.
[ -f "$state_dir/daemon.json" ] || echo '{}' >"$state_dir/daemon.json"

# setsid: the daemon gets its own session, so a Ctrl-C or the end of the CI
# step's process group does not reach it; stdin is closed so it keeps no pipe open.
setsid dockerd \
  --config-file "$state_dir/daemon.json" \
  --data-root "$data_root" --exec-root "$state_dir/exec" \
  -H "unix://$socket" --pidfile "$pid_file" \
  </dev/null >"$state_dir/dockerd.log" 2>&1 &
daemon_pid=$!

for _ in $(seq 1 $((wait_seconds * 10))); do
  if docker -H "unix://$socket" info >/dev/null 2>&1; then
    echo "export DOCKER_HOST=unix://$socket"
    exit 0
  fi
  if ! kill -0 "$daemon_pid" 2>/dev/null; then
    echo "start-dockerd: dockerd exited early; last lines of $state_dir/dockerd.log:" >&2
    tail -n 20 "$state_dir/dockerd.log" >&2
    exit 1
  fi
  sleep 0.1
done
echo "start-dockerd: dockerd did not respond within ${wait_seconds}s; see $state_dir/dockerd.log" >&2
exit 1
