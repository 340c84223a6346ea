# Reelay: one command set for laptops and CI (CI runs `make test` through .ci/run).
#
#   make up       install what is missing, start Kafka, FerretDB, the TikTok sandbox and the three
#                 services in the background (.run/<name>.pid, .run/<name>.log), wait until healthy,
#                 then upload a sample video and follow it to `published`. With KAFKA_BOOTSTRAP_SERVERS
#                 / MONGODB_URI (/ S3_ENDPOINT_URL for REELAY_BLOB_STORE=s3) set, it uses those servers
#                 and neither installs nor starts its own
#   make down     stop what `make up` started (never a server named by those variables)
#   make status   what runs, and whether it is healthy; which servers are external
#   make bench    the benchmarks of bench/ (upload speed at 10 MB, 200 MB, 1 GB per source kind;
#                 a 2 GB file through ingest); QUICK=1 for 10 MB and 200 MB. Stops by itself.
#   make chaos    500 uploads over 50 accounts while the services, Kafka and FerretDB are killed and the
#                 sandbox injects faults; ends `chaos: ... lost=0 duplicates=0 ...` (its own Kafka on 39092,
#                 FerretDB on 37217); QUICK=1 for 50 uploads (~3 min), SEED=N to replay a run,
#                 BUDGET=seconds for the whole run (default 1200). Stops by itself.
#   make test     lint (ruff, import contracts, deptry), type check, each package synced and imported
#                 alone, unit + integration + e2e tests (starts and stops its own Kafka on 29092,
#                 FerretDB on 27217 and SeaweedFS's S3 on 28333 unless
#                 KAFKA_BOOTSTRAP_SERVERS / MONGODB_URI / S3_ENDPOINT_URL are set)
#
# Ports (env): KAFKA_PORT=9092 KAFKA_CONTROLLER_PORT=9093 FERRETDB_PORT=27017 SANDBOX_PORT=8100
# INGEST_PORT=8000 UPLOADER_OPS_PORT=9101 POLLER_OPS_PORT=9102; TIKTOK_API_BASE_URL=http://host:port
# points the stack at another TikTok endpoint (no sandbox is started). DEMO=0 skips the demo upload.
# REELAY_BLOB_STORE=local (default) | s3 | gridfs; with s3 and no S3_ENDPOINT_URL, SeaweedFS is started
# (SEAWEEDFS_S3_PORT=8333 SEAWEEDFS_MASTER_PORT=9333 SEAWEEDFS_VOLUME_PORT=8080 SEAWEEDFS_FILER_PORT=8888).

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

ROOT := $(patsubst %/,%,$(dir $(abspath $(lastword $(MAKEFILE_LIST)))))
UV := $(ROOT)/.cache/tools/bin/uv
# `uv run --no-sync`: the environment was synced by `install`; never re-resolve in the middle of a run.
RUN := $(UV) run --no-sync
# down/status must work even before (or without) the venv: stack.py's stop path is stdlib-only.
BARE_PY := $(shell test -x $(ROOT)/.venv/bin/python && echo $(ROOT)/.venv/bin/python || echo python3)

# Every workspace member (pyproject.toml's [tool.uv.workspace]); deptry checks each against its own pyproject.
MEMBERS := libs/common libs/testing services/ingest services/uploader services/status-poller tools/tiktok-sandbox tools/cli
# An editable install records no top-level module, so deptry would only guess a member's import name
# from its distribution name: state it.
DEPTRY_MAP := reelay-common=reelay_common,reelay-testing=reelay_testing,reelay-cli=reelay_cli

MYPY_PATHS := libs/common/src libs/testing/src services/ingest/src services/uploader/src services/status-poller/src \
              tools/tiktok-sandbox/src tools/cli/src scripts

.PHONY: help install venv kafka ferretdb seaweedfs up down status demo logs test lint format typecheck \
        test-python packages schemas k8s deploy-check clean bench chaos

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: venv kafka ferretdb ## install uv, the Python workspace, Kafka and FerretDB (cached in .cache/)

venv: ## install the pinned uv into .cache/tools and sync .venv from uv.lock
	@$(ROOT)/scripts/bootstrap.sh

kafka: ## gather Apache Kafka from Maven Central into .cache/kafka
	@$(ROOT)/scripts/infra/install-kafka.sh

ferretdb: ## build FerretDB from the Go module proxy into .cache/ferretdb
	@$(ROOT)/scripts/infra/install-ferretdb.sh

seaweedfs: ## build SeaweedFS (the S3 server of `make test`) from the Go module proxy into .cache/seaweedfs
	@$(ROOT)/scripts/infra/install-seaweedfs.sh

# Only what this stack will run is installed: no Kafka, FerretDB or SeaweedFS where the environment
# names a server to use instead (KAFKA_BOOTSTRAP_SERVERS, MONGODB_URI, S3_ENDPOINT_URL).
up: venv ## start what is missing of the stack in the background and run the demo
	@if [ -z "$${KAFKA_BOOTSTRAP_SERVERS:-}" ]; then $(ROOT)/scripts/infra/install-kafka.sh; fi
	@if [ -z "$${MONGODB_URI:-}" ]; then $(ROOT)/scripts/infra/install-ferretdb.sh; fi
	@if [ "$${REELAY_BLOB_STORE:-local}" = s3 ] && [ -z "$${S3_ENDPOINT_URL:-}" ]; then \
	  $(ROOT)/scripts/infra/install-seaweedfs.sh; fi
	@$(RUN) python $(ROOT)/scripts/stack.py up

down: ## stop what `make up` started
	@$(BARE_PY) $(ROOT)/scripts/stack.py down

status: ## show what runs and whether it is healthy
	@$(BARE_PY) $(ROOT)/scripts/stack.py status

demo: venv ## upload a sample video through the running stack and follow it
	@$(RUN) python $(ROOT)/scripts/stack.py demo

logs: ## follow every log of the stack
	@tail -n 20 -F $(ROOT)/.run/*.log

test: install lint typecheck packages deploy-check test-python ## lint, type check, packages alone, then unit, integration and e2e tests

lint: venv ## ruff, the import contracts (lint-imports) and deptry on every workspace member
	$(RUN) ruff format --check .
	$(RUN) ruff check .
	$(RUN) lint-imports --config $(ROOT)/pyproject.toml
	@for member in $(MEMBERS); do \
	  echo "deptry $$member"; \
	  (cd $(ROOT)/$$member && $(RUN) deptry src --no-ansi --package-module-name-map $(DEPTRY_MAP)) || exit 1; \
	done

packages: venv ## each workspace member syncs from uv.lock into a throwaway venv and imports alone
	@$(ROOT)/scripts/check_packages.sh

format: venv ## apply ruff's formatting and safe fixes
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

typecheck: venv ## mypy --strict on libs/, services/, tools/ and scripts/
	MYPYPATH=scripts $(RUN) mypy $(MYPY_PATHS)

test-python: install ## pytest: unit, then integration + e2e against real Kafka and FerretDB
	@$(ROOT)/scripts/test.sh

bench: install ## benchmarks (bench/RESULTS.md): upload speed per source kind, a 2 GB file through ingest; QUICK=1
	@QUICK=$(QUICK) $(ROOT)/bench/run.sh

chaos: install ## 500 uploads under kills, broker/Mongo restarts and TikTok faults: lost=0 duplicates=0; QUICK=1, SEED=N
	@timeout $$(( $(or $(BUDGET),1200) + 300 )) $(RUN) python $(ROOT)/bench/chaos.py $(if $(filter-out 0,$(QUICK)),--quick) $(if $(SEED),--seed $(SEED)) $(if $(BUDGET),--budget $(BUDGET))

schemas: venv ## regenerate schemas/ (JSON Schema of every message + AsyncAPI document)
	$(RUN) python $(ROOT)/scripts/export_schemas.py

KUSTOMIZE_VERSION ?= v5.5.0
k8s: ## render the k8s overlays with kustomize (built from the Go module proxy into .cache/tools)
	@test -x $(ROOT)/.cache/tools/kustomize-$(KUSTOMIZE_VERSION)/kustomize || \
	  GOBIN=$(ROOT)/.cache/tools/kustomize-$(KUSTOMIZE_VERSION) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	@for overlay in staging production; do \
	  $(ROOT)/.cache/tools/kustomize-$(KUSTOMIZE_VERSION)/kustomize build $(ROOT)/deploy/k8s/overlays/$$overlay \
	    > $(ROOT)/.cache/k8s-$$overlay.yaml && echo "deploy/k8s/overlays/$$overlay -> .cache/k8s-$$overlay.yaml"; \
	done

KUSTOMIZE := $(ROOT)/.cache/tools/kustomize-$(KUSTOMIZE_VERSION)/kustomize
deploy-check: venv ## deploy/: overlays render and validate (k8s + CRD schemas), checkov, hadolint, compose schema
	@test -x $(KUSTOMIZE) || \
	  GOBIN=$(ROOT)/.cache/tools/kustomize-$(KUSTOMIZE_VERSION) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	$(RUN) python $(ROOT)/scripts/deploy_check.py $(KUSTOMIZE)

clean: down ## stop the stack and delete its data (.run); keeps the install cache
	rm -rf $(ROOT)/.run
