#!/bin/sh
# Entrypoint of the Redis nodes and Sentinels of compose.yaml's "sentinel" profile (and of the
# `redis` service under compose.sentinel.yaml). The command is `redis-server CONFIG [...]`, with
# CONFIG in the container's own volume: on the first start it is written from the read-only
# template SEED_TEMPLATE plus the lines in SEED_LINES (the name this container announces,
# whom a replica follows), then the image's entrypoint runs the command.
#
# Written once, never again: Sentinel rewrites these files. A Sentinel keeps its ID, epoch and
# peers there; a node keeps its role (`replicaof`, set by Sentinel on a failover). A restart
# that started again from the template would bring back a demoted primary as a primary, or a
# promoted replica as a replica of a replica. So a changed template reaches a container only
# with a new volume: a Sentinel's can be removed (it relearns the rest from its peers); a
# node's holds its data too, so change a node with CONFIG SET and CONFIG REWRITE instead.
set -eu
if [ "$#" -lt 2 ] || [ "$1" != redis-server ]; then
  echo "usage: seed.sh redis-server CONFIG [options]" >&2
  exit 64
fi
config=$2
if [ ! -s "$config" ]; then
  {
    cat "$SEED_TEMPLATE"
    printf '%s\n' "${SEED_LINES:-}"
  } >"$config.new"
  mv "$config.new" "$config"
fi
exec docker-entrypoint.sh "$@"
