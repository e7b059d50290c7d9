# Mail Queue developer tasks. `make` (or `make help`) lists them.
#
# Fresh machine: `make run` starts PostgreSQL, Redis and Mailpit (installing
# them when missing) and runs the service; `make test` runs every test.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# Find Go's own toolchain when it is not on PATH yet (fresh shells often lack
# /usr/local/go/bin), and put `go install`ed tools on PATH too.
ifeq ($(shell command -v go 2>/dev/null),)
export PATH := /usr/local/go/bin:$(PATH)
endif
GOBIN_DIR := $(shell go env GOPATH 2>/dev/null)/bin
export PATH := $(PATH):$(GOBIN_DIR)

# Narrow `make test`: make test PKG=./store/... RUN=TestX
PKG ?= ./...
RUN ?=

# What the tests connect to (see scripts/services.sh, scripts/redis-cluster.sh).
TEST_ENV := \
	MQ_TEST_DATABASE_URL='postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable' \
	MQ_TEST_REDIS_ADDR=127.0.0.1:6379 \
	MQ_TEST_REDIS_CLUSTER_ADDRS=127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003,127.0.0.1:7004,127.0.0.1:7005 \
	MQ_TEST_MAILPIT_URL=http://127.0.0.1:8025 \
	MQ_TEST_MAILPIT_SMTP=127.0.0.1:1025

.PHONY: help
help: ## List the targets
	@echo 'Usage: make <target> [PKG=./pkg/... RUN=TestName]'
	@echo
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-13s %s\n", $$1, $$2}'

.PHONY: check-go
check-go:
	@command -v go >/dev/null || { echo 'error: Go is not installed: install Go 1.26+ into /usr/local/go (https://go.dev/doc/install)' >&2; exit 1; }

.PHONY: up
up: ## Start PostgreSQL, Redis and Mailpit (installing them if missing)
	@scripts/services.sh up

.PHONY: down
down: ## Stop the services that `make up` started (never pre-existing ones)
	@scripts/services.sh down

.PHONY: status
status: ## Show which services answer and who started them
	@scripts/services.sh status

.PHONY: build
build: check-go ## Build bin/mailqueue
	go build -o bin/mailqueue ./cmd/mailqueue

.PHONY: generate
generate: check-go ## Regenerate the API code in oas/ from openapi.yaml
	go tool ogen --target oas --package oas --clean openapi.yaml

.PHONY: lint
lint: check-go ## gofmt, go vet, staticcheck, and check oas/ is up to date
	@echo '--- gofmt'
	@files="$$(gofmt -l .)"; if [ -n "$$files" ]; then \
		echo 'these files are not gofmt-ed (run gofmt -w):'; echo "$$files"; exit 1; fi
	@echo '--- go vet'
	go vet ./...
	@echo '--- staticcheck'
	go tool staticcheck ./...
	@echo '--- oas/ drift'
	@if [ ! -f openapi.yaml ]; then echo 'no openapi.yaml yet: skipped'; else \
		tmp="$$(mktemp -d)"; trap 'rm -rf "$$tmp"' EXIT; \
		go tool ogen --target "$$tmp/oas" --package oas --clean openapi.yaml >"$$tmp/ogen.log" 2>&1 || \
			{ cat "$$tmp/ogen.log"; echo 'ogen failed on openapi.yaml'; exit 1; }; \
		diff -r "$$tmp/oas" oas || { echo 'oas/ is stale: run make generate'; exit 1; }; \
		echo 'oas/ is up to date'; fi

.PHONY: run
run: up build ## Start the services, migrate, and run everything (bin/mailqueue all)
	@scripts/run.sh

.PHONY: test
test: check-go up ## Run all tests with -race (PKG=./store/... RUN=TestX to narrow)
	@scripts/services.sh ensure gcc gcc # -race needs cgo
	@scripts/redis-cluster.sh up
	$(TEST_ENV) go test -race -count=1 -timeout 20m $(if $(RUN),-run '$(RUN)') $(PKG)

.PHONY: cluster-up cluster-down
cluster-up: ## Start the 6-node Redis Cluster on 127.0.0.1:7000-7005
	@scripts/redis-cluster.sh up
cluster-down: ## Stop the Redis Cluster
	@scripts/redis-cluster.sh down

# Extra benchrun flags: make bench BENCH_FLAGS=-short (smoke run, < 1 min);
# BENCH_NAME names bench/results/<date>-<name>.md.
BENCH_FLAGS ?=
BENCH_NAME ?=

.PHONY: bench
bench: check-go up ## Run the benchmark scenario (< 5 min) into bench/results/<date>-<name>.md (BENCH_FLAGS=-short for a smoke run)
	@$(TEST_ENV) BENCH_NAME='$(BENCH_NAME)' scripts/bench.sh $(BENCH_FLAGS)

.PHONY: clean
clean: ## Stop what the scripts started, remove bin/ and .run/ (keeps .env.local)
	@scripts/redis-cluster.sh down
	@scripts/services.sh down
	rm -rf bin/ .run/
