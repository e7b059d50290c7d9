#!/usr/bin/env bash
# Benchmarks (placeholder until the load generator exists): runs every Go
# benchmark and writes the output, with a header describing the machine, to
# bench/results/<date>-gobench.md. Expects the services and test env that
# `make bench` sets up.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
find_go

PKG="${PKG:-./...}"
BENCHTIME="${BENCHTIME:-3s}"
OUT_DIR="$ROOT/bench/results"
OUT="$OUT_DIR/$(date +%F)-gobench.md"
CMD=(go test -run '^$' -bench . -benchtime "$BENCHTIME" "$PKG")
mkdir -p "$OUT_DIR"

{
	echo "# Go benchmarks, $(date '+%F %T %Z')"
	echo
	echo "- machine: $(nproc) cores (nproc), $(uname -srm); memory (free -h) below"
	echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo none)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
	echo "- go: $(go version)"
	echo "- command: \`go test -run '^\$' -bench . -benchtime $BENCHTIME $PKG\`"
	echo
	echo '```'
	free -h
	echo '```'
	echo
	echo '```'
} >"$OUT"

status=0
"${CMD[@]}" 2>&1 | tee -a "$OUT" || status=$?
echo '```' >>"$OUT"
log "results written to ${OUT#"$ROOT"/}"
exit "$status"
