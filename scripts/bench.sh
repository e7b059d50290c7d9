#!/usr/bin/env bash
# Benchmarks: runs bench/cmd/benchrun, which creates a fresh database, starts
# an in-process SMTP sink and bin/mailqueue, drives it over HTTP and writes
# bench/results/<date>-<name>.md. Expects the services that `make bench`
# starts (PostgreSQL, Redis) and MQ_TEST_DATABASE_URL / MQ_TEST_REDIS_ADDR.
#
#   scripts/bench.sh              full scenario, under 5 minutes, name "full"
#   scripts/bench.sh -short       smoke run, under a minute, name "smoke"
#   BENCH_NAME=x scripts/bench.sh -phases accept,deliver
# Any arguments are passed to benchrun (see: go run ./bench/cmd/benchrun -h).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
find_go

args=("$@")
if [ -n "${BENCH_NAME:-}" ]; then
	args=(-name "$BENCH_NAME" "${args[@]}")
fi
log "go run ./bench/cmd/benchrun ${args[*]}"
exec go run ./bench/cmd/benchrun "${args[@]}"
