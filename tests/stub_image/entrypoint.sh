#!/bin/sh
# Stand-in for docker/entrypoint.sh in the stub image: it follows the same
# contract (docker/CONTRACT.md) in the smallest way busybox allows. As root it
# creates the agent user from LLM_DOCKER_UID/LLM_DOCKER_GID, then runs the
# command as that user in LLM_DOCKER_WORKDIR.
set -e
uid=${LLM_DOCKER_UID:-1000}
gid=${LLM_DOCKER_GID:-1000}
echo "agent:x:$uid:$gid:agent:/home/agent:/bin/sh" >>/etc/passwd
echo "agent:x:$gid:" >>/etc/group
mkdir -p /home/agent
chown "$uid:$gid" /home/agent
cd "${LLM_DOCKER_WORKDIR:-/}"
# busybox su runs "$@" unchanged: ARG0 and ARGS follow the -c script, and
# POSIXLY_CORRECT stops its option parser at the user name.
# shellcheck disable=SC2016 # the inner shell expands $0 and $@, not this one
POSIXLY_CORRECT=1 exec su -s /bin/sh agent -c 'unset POSIXLY_CORRECT; exec "$0" "$@"' "$@"
