#!/usr/bin/env bash
# Start, stop or show the services Mail Queue needs on a developer machine:
#   PostgreSQL  127.0.0.1:5432   (role postgres / password postgres, database mailqueue)
#   Redis       127.0.0.1:6379
#   Mailpit     127.0.0.1:1025 (SMTP), http://127.0.0.1:8025 (web UI and API)
#
# Usage: scripts/services.sh up|down|status
#
# For each service, `up`:
#   1. uses it when its port already answers;
#   2. else, when a Docker engine answers, starts it with docker compose;
#   3. else installs it (apt-get; Mailpit with `go install` into .bin/) and
#      starts it natively, with systemd when systemd runs, without otherwise.
# `down` stops only what `up` started (recorded under .run/), never a service
# that was already running. Both are idempotent.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MAILPIT_VERSION="${MAILPIT_VERSION:-v1.33.1}"
MAILPIT_BIN="$BIN_DIR/mailpit"
COMPOSE_FILE="$ROOT/docker-compose.yml"
COMPOSE_STATE="$RUN_DIR/compose.services" # services started with docker compose
PG_STATE="$RUN_DIR/postgres.started"      # how we started PostgreSQL natively
REDIS_STATE="$RUN_DIR/redis.started"      # "systemd" when started with systemctl
REDIS_PID="$RUN_DIR/redis.pid"
MAILPIT_PID="$RUN_DIR/mailpit.pid"

PG_HOST=127.0.0.1 PG_PORT=5432
REDIS_HOST=127.0.0.1 REDIS_PORT=6379
MP_HOST=127.0.0.1 MP_SMTP_PORT=1025 MP_HTTP_PORT=8025
START_TIMEOUT="${START_TIMEOUT:-90}"

# ---------------------------------------------------------------- docker ----

_DOCKER_CHECKED=0 _DOCKER_OK=1
COMPOSE=()
docker_available() {
	if [ "$_DOCKER_CHECKED" -eq 0 ]; then
		_DOCKER_CHECKED=1
		if [ "${MQ_NO_DOCKER:-}" != 1 ] && have docker && timeout 15 docker info >/dev/null 2>&1; then
			# The app services (profile "app") require these two; compose
			# interpolates the whole file, so give it placeholders when unset.
			local envs=(env "MQ_ADMIN_SECRET=${MQ_ADMIN_SECRET:-unused-by-services-sh}"
				"MQ_ENCRYPTION_KEY=${MQ_ENCRYPTION_KEY:-unused-by-services-sh}")
			if docker compose version >/dev/null 2>&1; then
				COMPOSE=("${envs[@]}" docker compose -f "$COMPOSE_FILE")
				_DOCKER_OK=0
			elif have docker-compose; then
				COMPOSE=("${envs[@]}" docker-compose -f "$COMPOSE_FILE")
				_DOCKER_OK=0
			else
				warn "a Docker engine answers but docker compose is missing: installing services natively"
			fi
		fi
	fi
	return "$_DOCKER_OK"
}

compose_up() {
	local svc="$1"
	log "$svc: starting with docker compose"
	"${COMPOSE[@]}" up -d "$svc" || die "docker compose up -d $svc failed"
	mkdir -p "$RUN_DIR"
	grep -qx "$svc" "$COMPOSE_STATE" 2>/dev/null || echo "$svc" >>"$COMPOSE_STATE"
}

# --------------------------------------------------------------- postgres ----

pg_version() { find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort -V | tail -n 1; }

postgres_native_start() {
	if [ -z "$(pg_version)" ] || ! have pg_ctlcluster; then
		apt_install postgresql
	fi
	port_open "$PG_HOST" "$PG_PORT" && return 0 # the package's own start did it
	local ver
	ver="$(pg_version)"
	[ -n "$ver" ] || die "postgresql is installed but /etc/postgresql has no version directory"
	if [ ! -d "/etc/postgresql/$ver/main" ]; then
		log "postgres: creating cluster $ver/main"
		as_root pg_createcluster "$ver" main
	fi
	mkdir -p "$RUN_DIR"
	if systemd_running; then
		log "postgres: systemctl start postgresql@$ver-main"
		as_root systemctl start "postgresql@$ver-main" || as_root systemctl start postgresql
		echo "systemd $ver" >"$PG_STATE"
	else
		log "postgres: pg_ctlcluster $ver main start"
		as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start ||
			as_root pg_ctlcluster "$ver" main start ||
			die "could not start PostgreSQL $ver/main (see /var/log/postgresql/)"
		echo "pg_ctlcluster $ver" >"$PG_STATE"
	fi
}

postgres_ready() {
	if have pg_isready; then
		pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2
	else
		port_open "$PG_HOST" "$PG_PORT"
	fi
}

postgres_wait() {
	local waited=0
	until postgres_ready; do
		[ "$waited" -lt "$START_TIMEOUT" ] ||
			die "PostgreSQL did not accept connections on $PG_HOST:$PG_PORT within ${START_TIMEOUT}s (is it configured for another port? see /var/log/postgresql/)"
		sleep 1
		waited=$((waited + 1))
	done
}

pg_tcp() { # pg_tcp DB SQL: run SQL over TCP as postgres:postgres
	PGPASSWORD=postgres PGCONNECT_TIMEOUT=5 psql -X -q -t -A -v ON_ERROR_STOP=1 \
		"host=$PG_HOST port=$PG_PORT user=postgres dbname=$1" -c "$2"
}

# Make postgres:postgres work over TCP and create the mailqueue database.
postgres_setup() {
	ensure_cmd psql postgresql-client
	postgres_wait
	if ! pg_tcp postgres 'select 1' >/dev/null 2>&1; then
		log "postgres: TCP login as postgres:postgres failed; setting the role's password to 'postgres'"
		if ! id postgres >/dev/null 2>&1 ||
			! as_user postgres psql -X -q -p "$PG_PORT" -c "ALTER ROLE postgres WITH PASSWORD 'postgres'"; then
			die "cannot log in to PostgreSQL at $PG_HOST:$PG_PORT as postgres/postgres, and could not set that password through the local socket. Set it yourself: ALTER ROLE postgres WITH PASSWORD 'postgres';"
		fi
		pg_tcp postgres 'select 1' >/dev/null ||
			die "still cannot log in to PostgreSQL at $PG_HOST:$PG_PORT as postgres/postgres (check pg_hba.conf allows host connections with a password)"
	fi
	if [ "$(pg_tcp postgres "select 1 from pg_database where datname = 'mailqueue'")" != 1 ]; then
		log "postgres: creating database mailqueue"
		pg_tcp postgres 'CREATE DATABASE mailqueue' >/dev/null
	fi
}

postgres_up() {
	if port_open "$PG_HOST" "$PG_PORT"; then
		log "postgres: already running"
	elif docker_available; then
		compose_up postgres
	else
		postgres_native_start
	fi
	postgres_setup
	log "postgres: ready on $PG_HOST:$PG_PORT (postgres:postgres, database mailqueue)"
}

postgres_down() {
	[ -f "$PG_STATE" ] || return 0
	local how ver
	read -r how ver <"$PG_STATE"
	log "postgres: stopping cluster $ver/main (started by this script)"
	case "$how" in
	systemd) as_root systemctl stop "postgresql@$ver-main" || true ;;
	*) as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main stop ||
		as_root pg_ctlcluster "$ver" main stop || true ;;
	esac
	rm -f "$PG_STATE"
}

# ------------------------------------------------------------------ redis ----

redis_native_start() {
	have redis-server || apt_install redis-server
	ensure_cmd redis-cli redis-tools
	port_open "$REDIS_HOST" "$REDIS_PORT" && return 0 # the package's own start did it
	mkdir -p "$RUN_DIR/redis"
	if systemd_running; then
		log "redis: systemctl start redis-server"
		as_root systemctl start redis-server
		echo systemd >"$REDIS_STATE"
	else
		log "redis: starting redis-server (log: .run/redis.log)"
		redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
			--save '' --appendonly no --dir "$RUN_DIR/redis" \
			--pidfile "$REDIS_PID" --logfile "$RUN_DIR/redis.log" ||
			die "redis-server failed to start (see .run/redis.log)"
		echo pidfile >"$REDIS_STATE"
	fi
}

redis_up() {
	if port_open "$REDIS_HOST" "$REDIS_PORT"; then
		log "redis: already running"
	elif docker_available; then
		compose_up redis
	else
		redis_native_start
	fi
	wait_port redis "$REDIS_HOST" "$REDIS_PORT" "$START_TIMEOUT"
	log "redis: ready on $REDIS_HOST:$REDIS_PORT"
}

redis_down() {
	[ -f "$REDIS_STATE" ] || return 0
	case "$(cat "$REDIS_STATE")" in
	systemd)
		log "redis: stopping (started by this script)"
		as_root systemctl stop redis-server || true
		;;
	*) stop_pidfile redis "$REDIS_PID" ;;
	esac
	rm -f "$REDIS_STATE"
}

# ---------------------------------------------------------------- mailpit ----

mailpit_installed() {
	[ -x "$MAILPIT_BIN" ] || return 1
	# `go version -m` reads the module version offline (mailpit's own
	# `version` command goes online to look for updates).
	if have go || [ -x /usr/local/go/bin/go ]; then
		find_go
		go version -m "$MAILPIT_BIN" 2>/dev/null |
			grep -Eq "^[[:space:]]*mod[[:space:]]+github.com/axllent/mailpit[[:space:]]+$MAILPIT_VERSION([[:space:]]|\$)"
	fi
}

mailpit_install() {
	mailpit_installed && return 0
	find_go
	log "mailpit: installing $MAILPIT_VERSION into .bin/ (go install, first time takes a minute or two)"
	mkdir -p "$BIN_DIR"
	GOBIN="$BIN_DIR" go install "github.com/axllent/mailpit@$MAILPIT_VERSION" ||
		die "go install github.com/axllent/mailpit@$MAILPIT_VERSION failed"
}

mailpit_native_start() {
	mailpit_install
	mkdir -p "$RUN_DIR"
	log "mailpit: starting (log: .run/mailpit.log)"
	# setsid + nohup: keep running after this script and its terminal go away.
	setsid nohup "$MAILPIT_BIN" \
		--smtp "$MP_HOST:$MP_SMTP_PORT" --listen "$MP_HOST:$MP_HTTP_PORT" \
		--smtp-auth-accept-any --smtp-auth-allow-insecure \
		--disable-version-check \
		>"$RUN_DIR/mailpit.log" 2>&1 </dev/null &
	echo $! >"$MAILPIT_PID"
}

mailpit_up() {
	local smtp=1 http=1
	port_open "$MP_HOST" "$MP_SMTP_PORT" || smtp=0
	port_open "$MP_HOST" "$MP_HTTP_PORT" || http=0
	if [ "$smtp" = 1 ] && [ "$http" = 1 ]; then
		log "mailpit: already running"
	elif [ "$smtp" = 1 ] || [ "$http" = 1 ]; then
		die "mailpit: only one of $MP_HOST:$MP_SMTP_PORT and $MP_HOST:$MP_HTTP_PORT answers; something else holds that port"
	elif pid_alive "$MAILPIT_PID"; then
		log "mailpit: started earlier (pid $(cat "$MAILPIT_PID")), waiting for it"
	elif docker_available; then
		compose_up mailpit
	else
		mailpit_native_start
	fi
	local waited=0
	until port_open "$MP_HOST" "$MP_SMTP_PORT" && port_open "$MP_HOST" "$MP_HTTP_PORT"; do
		if [ -f "$MAILPIT_PID" ] && ! pid_alive "$MAILPIT_PID"; then
			tail -n 20 "$RUN_DIR/mailpit.log" >&2 || true
			die "mailpit exited (see .run/mailpit.log)"
		fi
		[ "$waited" -lt "$START_TIMEOUT" ] || die "mailpit did not answer on $MP_HOST:$MP_SMTP_PORT/$MP_HTTP_PORT within ${START_TIMEOUT}s"
		sleep 1
		waited=$((waited + 1))
	done
	log "mailpit: ready, SMTP $MP_HOST:$MP_SMTP_PORT, inbox http://$MP_HOST:$MP_HTTP_PORT"
}

mailpit_down() { stop_pidfile mailpit "$MAILPIT_PID"; }

# ---------------------------------------------------------------- compose ----

compose_down() {
	[ -s "$COMPOSE_STATE" ] || return 0
	local svcs
	mapfile -t svcs <"$COMPOSE_STATE"
	if docker_available; then
		log "docker compose: stopping ${svcs[*]}"
		"${COMPOSE[@]}" rm --stop --force "${svcs[@]}" || warn "docker compose rm failed"
	else
		warn "docker compose started ${svcs[*]} but no Docker engine answers now"
	fi
	rm -f "$COMPOSE_STATE"
}

# ----------------------------------------------------------------- status ----

status_line() { # status_line NAME HOST:PORT[,HOST:PORT] MANAGER
	local name="$1" addrs="$2" manager="$3" state=up addr
	for addr in ${addrs//,/ }; do
		port_open "${addr%:*}" "${addr##*:}" || state=down
	done
	printf '%-9s %-5s %-32s %s\n' "$name" "$state" "$addrs" "$manager"
}

manager_of() { # manager_of SERVICE STATEFILE
	if grep -qx "$1" "$COMPOSE_STATE" 2>/dev/null; then
		echo "started by services.sh (docker compose)"
	elif [ -f "$2" ]; then
		echo "started by services.sh (${3:-$(cut -d' ' -f1 "$2")})"
	else
		echo "not managed by services.sh"
	fi
}

status() {
	status_line postgres "$PG_HOST:$PG_PORT" "$(manager_of postgres "$PG_STATE")"
	status_line redis "$REDIS_HOST:$REDIS_PORT" "$(manager_of redis "$REDIS_STATE")"
	status_line mailpit "$MP_HOST:$MP_SMTP_PORT,$MP_HOST:$MP_HTTP_PORT" "$(manager_of mailpit "$MAILPIT_PID" "pid $(cat "$MAILPIT_PID" 2>/dev/null)")"
}

# ------------------------------------------------------------------- main ----

# Sourcing this file (for tests) defines the functions without running them.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

case "${1:-}" in
up)
	postgres_up
	redis_up
	mailpit_up
	;;
down)
	mailpit_down
	redis_down
	postgres_down
	compose_down
	;;
status) status ;;
ensure) # ensure CMD PKG: apt-get install PKG when CMD is missing (used by the Makefile)
	[ $# -eq 3 ] || die "usage: $0 ensure CMD PACKAGE"
	ensure_cmd "$2" "$3"
	;;
*)
	echo "usage: $0 up|down|status" >&2
	exit 2
	;;
esac
