#!/usr/bin/env bash
# Run Mail Queue locally: what `make run` does after `make up build`.
#
# Creates .env.local (gitignored) on first use with a random MQ_ADMIN_SECRET
# and MQ_ENCRYPTION_KEY, loads it, migrates the database, prints how to try
# the service, then replaces itself with `bin/mailqueue all`.
#
# Precedence: the defaults below (or the same variables from your shell), then
# .env.local, which may set any MQ_* variable (see .env.example).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ENV_FILE="$ROOT/.env.local"
BIN="$ROOT/bin/mailqueue"

random_hex() { # random_hex BYTES
	if have openssl; then
		openssl rand -hex "$1"
	else
		od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'
	fi
}

random_base64() { # random_base64 BYTES
	if have openssl; then
		openssl rand -base64 "$1"
	else
		head -c "$1" /dev/urandom | base64 | tr -d '\n'
	fi
}

if [ ! -f "$ENV_FILE" ]; then
	log "creating .env.local with a new admin secret and encryption key"
	umask 077
	cat >"$ENV_FILE" <<ENV
# Local settings for \`make run\`, created by scripts/run.sh. Not committed.
# Keep MQ_ENCRYPTION_KEY: secrets stored in the database are encrypted with it.
# Any other MQ_* variable from .env.example may be added here.
MQ_ADMIN_SECRET=$(random_hex 24)
MQ_ENCRYPTION_KEY=$(random_base64 32)
ENV
	umask 022
fi

export MQ_DATABASE_URL="${MQ_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/mailqueue?sslmode=disable}"
export MQ_LOG_FORMAT="${MQ_LOG_FORMAT:-text}"
# A laptop's relays (Mailpit, a local Postfix) are on loopback; a server keeps the default.
export MQ_SMTP_ALLOW_PRIVATE="${MQ_SMTP_ALLOW_PRIVATE:-true}"
set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
set +a
[ -n "${MQ_ADMIN_SECRET:-}" ] || die ".env.local does not set MQ_ADMIN_SECRET (delete it to have a new one made)"
[ -n "${MQ_ENCRYPTION_KEY:-}" ] || die ".env.local does not set MQ_ENCRYPTION_KEY"

[ -x "$BIN" ] || die "$BIN not found: run make build"

log "migrating the database"
"$BIN" migrate

HTTP="${MQ_HTTP_ADDR:-127.0.0.1:8080}"
case "$HTTP" in
:*) HTTP="127.0.0.1$HTTP" ;;
0.0.0.0:*) HTTP="127.0.0.1:${HTTP#0.0.0.0:}" ;;
esac
API="http://$HTTP"

cat <<BANNER

==============================================================================
 Mail Queue is starting on $API

 Admin secret   $MQ_ADMIN_SECRET   (from .env.local)
 Mailpit inbox  http://127.0.0.1:8025   (every email sent locally lands here)
 River UI       $API/riverui/   (admin secret as Bearer token)

 Try it (paste into another terminal):

 # 1. create an app (its "default" queue comes with it); keep its API key
 API_KEY=\$(curl -s -X POST $API/v1/apps -H "Authorization: Bearer $MQ_ADMIN_SECRET" -H 'Content-Type: application/json' -d '{"name":"My App"}' | sed -n 's/.*"key": *"\([^"]*\)".*/\1/p'); echo "API key: \$API_KEY"

 # 2. send an email with it, then look at the Mailpit inbox
 curl -s -X POST $API/v1/emails -H "Authorization: Bearer \$API_KEY" -H 'Content-Type: application/json' -d '{"from":{"email":"hello@example.com"},"to":[{"email":"you@example.com"}],"subject":"Hello","text":"It works"}'
==============================================================================

BANNER

exec "$BIN" all
