# shellcheck shell=bash
# Helpers shared by the scripts in this folder. Source it; do not run it.
#
# Sets ROOT (the repo root), RUN_DIR (.run/, pid files and logs of what the
# scripts start) and BIN_DIR (.bin/, tools installed for this repo).

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="$ROOT/.run"
BIN_DIR="$ROOT/.bin"
export ROOT RUN_DIR BIN_DIR

log() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
	printf 'error: %s\n' "$*" >&2
	exit 1
}

# have CMD: true when CMD is on PATH.
have() { command -v "$1" >/dev/null 2>&1; }

# as_root CMD...: run CMD as root (directly when we are root, else with sudo).
as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif have sudo; then
		sudo "$@"
	else
		die "need root for: $* (and sudo is not installed)"
	fi
}

# as_user USER CMD...: run CMD as the system user USER.
as_user() {
	local user="$1"
	shift
	if [ "$(id -un)" = "$user" ]; then
		"$@"
	elif [ "$(id -u)" -eq 0 ] && have runuser; then
		runuser -u "$user" -- "$@"
	elif have sudo; then
		sudo -u "$user" -- "$@"
	else
		die "need to run as $user: $* (no runuser/sudo)"
	fi
}

# systemd_running: true when systemd is PID 1 (services are started with it).
systemd_running() { [ -d /run/systemd/system ]; }

# apt_install PKG...: install Debian packages, running `apt-get update` at most
# once per script run.
_APT_UPDATED=0
apt_install() {
	have apt-get || die "cannot install $* automatically: apt-get not found (install it by hand)"
	if [ "$_APT_UPDATED" -eq 0 ]; then
		log "apt-get update"
		as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q ||
			die "apt-get update failed"
		_APT_UPDATED=1
	fi
	log "apt-get install -y $*"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" ||
		die "apt-get install $* failed"
}

# ensure_cmd CMD PKG: install PKG when CMD is missing.
ensure_cmd() {
	have "$1" || apt_install "$2"
	have "$1" || die "$1 still not found after installing $2"
}

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() {
	# shellcheck disable=SC2016 # expanded by the inner bash
	timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" >/dev/null 2>&1
}

# wait_port NAME HOST PORT [TIMEOUT_SECONDS]: wait until the port answers.
wait_port() {
	local name="$1" host="$2" port="$3" timeout="${4:-60}" waited=0
	until port_open "$host" "$port"; do
		if [ "$waited" -ge "$timeout" ]; then
			die "$name did not answer on $host:$port within ${timeout}s"
		fi
		sleep 1
		waited=$((waited + 1))
	done
}

# find_go: make sure `go` is on PATH (it may live in /usr/local/go/bin).
find_go() {
	if ! have go && [ -x /usr/local/go/bin/go ]; then
		PATH="/usr/local/go/bin:$PATH"
	fi
	have go || die "Go is not installed: install Go 1.26+ (https://go.dev/doc/install) into /usr/local/go"
}

# pid_alive PIDFILE: true when the pid file names a running process.
pid_alive() {
	local pid
	[ -s "$1" ] || return 1
	pid="$(cat "$1")"
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# stop_pidfile NAME PIDFILE: stop the process in PIDFILE (TERM, then KILL).
stop_pidfile() {
	local name="$1" file="$2" pid _
	if ! pid_alive "$file"; then
		rm -f "$file"
		return 0
	fi
	pid="$(cat "$file")"
	log "$name: stopping (pid $pid)"
	kill "$pid" 2>/dev/null || true
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$file"
}
