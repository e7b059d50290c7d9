#!/usr/bin/env bash
# A real 6-node Redis Cluster (3 masters + 3 replicas) on 127.0.0.1:7000-7005
# for the tests (MQ_TEST_REDIS_CLUSTER_ADDRS). Nodes keep nothing on disk
# except their nodes.conf, under .run/redis-cluster/<port>/.
#
# Usage: scripts/redis-cluster.sh up|down|status
#   up     start and form the cluster; does nothing when it is already healthy
#   down   shut our nodes down and remove .run/redis-cluster/
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLUSTER_DIR="$RUN_DIR/redis-cluster"
HOST=127.0.0.1
PORTS=(7000 7001 7002 7003 7004 7005)
TIMEOUT="${CLUSTER_TIMEOUT:-60}"

rcli() { # rcli PORT ARGS...
	local port="$1"
	shift
	timeout 5 redis-cli -h "$HOST" -p "$port" "$@" 2>/dev/null
}

# ours PORT: true when the node on PORT is one this script started (its pid
# file is under .run/redis-cluster/; still known after that dir was deleted).
ours() {
	local pidfile
	pidfile="$(rcli "$1" config get pidfile | sed -n 2p)"
	[ "$pidfile" = "$CLUSTER_DIR/$1/redis.pid" ]
}

# node_ok PORT: the node answers and sees a complete, healthy cluster.
node_ok() {
	local info
	info="$(rcli "$1" cluster info | tr -d '\r')" || return 1
	grep -qx 'cluster_state:ok' <<<"$info" &&
		grep -qx 'cluster_slots_ok:16384' <<<"$info" &&
		grep -qx "cluster_known_nodes:${#PORTS[@]}" <<<"$info"
}

healthy() {
	local p
	for p in "${PORTS[@]}"; do
		node_ok "$p" || return 1
	done
	# 3 masters, each with a replica.
	[ "$(rcli "${PORTS[0]}" cluster nodes | grep -c 'master')" -ge 3 ] &&
		[ "$(rcli "${PORTS[0]}" cluster nodes | grep -c 'slave')" -ge 3 ]
}

stop_nodes() {
	local p pidfile
	for p in "${PORTS[@]}"; do
		pidfile="$CLUSTER_DIR/$p/redis.pid"
		if port_open "$HOST" "$p" && ours "$p"; then
			rcli "$p" shutdown nosave >/dev/null || true
		fi
		if [ -f "$pidfile" ]; then
			stop_pidfile "redis-cluster node $p" "$pidfile"
		fi
	done
	for p in "${PORTS[@]}"; do
		local waited=0
		while port_open "$HOST" "$p" && [ "$waited" -lt 10 ]; do
			sleep 0.5
			waited=$((waited + 1))
		done
	done
}

up() {
	ensure_cmd redis-server redis-server
	ensure_cmd redis-cli redis-tools
	if healthy; then
		log "redis-cluster: already running and healthy on $HOST:${PORTS[0]}-${PORTS[-1]}"
		return 0
	fi
	# Anything half-started by an earlier run is ours to throw away; a port
	# held by something else is an error.
	stop_nodes
	local p
	for p in "${PORTS[@]}"; do
		if port_open "$HOST" "$p"; then
			die "port $HOST:$p is in use by something other than this script's Redis Cluster"
		fi
	done
	rm -rf "$CLUSTER_DIR"
	for p in "${PORTS[@]}"; do
		mkdir -p "$CLUSTER_DIR/$p"
		redis-server --port "$p" --bind "$HOST" \
			--cluster-enabled yes --cluster-config-file nodes.conf \
			--cluster-node-timeout 5000 \
			--save '' --appendonly no \
			--daemonize yes --dir "$CLUSTER_DIR/$p" \
			--pidfile "$CLUSTER_DIR/$p/redis.pid" \
			--logfile "$CLUSTER_DIR/$p/redis.log" ||
			die "redis-server on port $p failed to start (see $CLUSTER_DIR/$p/redis.log)"
	done
	for p in "${PORTS[@]}"; do
		wait_port "redis-cluster node" "$HOST" "$p" 20
	done
	local addrs=()
	for p in "${PORTS[@]}"; do addrs+=("$HOST:$p"); done
	log "redis-cluster: creating the cluster (3 masters + 3 replicas)"
	redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes </dev/null \
		>"$CLUSTER_DIR/create.log" 2>&1 || {
		cat "$CLUSTER_DIR/create.log" >&2
		die "redis-cli --cluster create failed"
	}
	local waited=0
	until healthy; do
		if [ "$waited" -ge "$((TIMEOUT * 2))" ]; then
			rcli "${PORTS[0]}" cluster info >&2 || true
			die "redis-cluster did not reach cluster_state:ok within ${TIMEOUT}s"
		fi
		sleep 0.5
		waited=$((waited + 1))
	done
	log "redis-cluster: ready on $(
		IFS=,
		echo "${addrs[*]}"
	)"
}

down() {
	stop_nodes
	rm -rf "$CLUSTER_DIR"
	log "redis-cluster: down"
}

case "${1:-}" in
up) up ;;
down) down ;;
status)
	if healthy; then echo "redis-cluster: up and healthy"; else
		echo "redis-cluster: down or unhealthy"
		exit 1
	fi
	;;
*)
	echo "usage: $0 up|down|status" >&2
	exit 2
	;;
esac
