#!/bin/sh
# Fake claude/opencode for launcher tests: prints what reached the container,
# one fact a line, so tests can assert on it. Paths in MOUNT, WRITABLE and
# READONLY lines are as /proc/mounts spells them (a space is \040).
echo "TOOL=$(basename "$0")"
i=0
for arg in "$@"; do
  echo "ARG[$i]=$arg"
  i=$((i + 1))
done
echo "UID=$(id -u) GID=$(id -g)"
echo "CWD=$(pwd)"
echo "HOSTNAME=$(hostname)"
env | sort | sed 's/^/ENV:/'
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs):' /proc/self/status | sed 's/^/STATUS:/'
awk '$2 !~ "^/(proc|sys|dev)(/|$)" { split($4, opts, ","); print "MOUNT:" $2 " " $3 " " opts[1] }' /proc/mounts
awk '$2 !~ "^/(proc|sys|dev)(/|$)" && $2 != "/" { print $2 }' /proc/mounts | while read -r escaped; do
  path=$(printf '%b' "$(echo "$escaped" | sed 's/\\\([0-7][0-7][0-7]\)/\\0\1/g')")
  [ -d "$path" ] || continue
  probe="$path/.llm-docker-probe-$$"
  if touch "$probe" 2>/dev/null; then
    rm -f "$probe"
    echo "WRITABLE:$escaped"
  else
    echo "READONLY:$escaped"
  fi
done
[ -S /var/run/docker.sock ] && echo "DOCKER_SOCKET:present"
# STUB_SLEEP=SECONDS keeps the tool running so tests can send it signals: it reports
# SIGWINCH and goes on, and exits 143 on SIGTERM like a tool that ends on it.
if [ -n "${STUB_SLEEP:-}" ]; then
  trap 'echo SIGNAL:TERM; exit 143' TERM
  trap 'echo SIGNAL:WINCH' WINCH
  sleep "$STUB_SLEEP" &
  sleeper=$!
  echo "SLEEPING"
  # A trapped signal ends `wait` early, so wait again until the sleep is over.
  while kill -0 "$sleeper" 2>/dev/null; do
    wait "$sleeper"
  done
fi
exit "${STUB_EXIT:-0}"
