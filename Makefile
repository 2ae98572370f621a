# meterline: every target sets up what it needs on a fresh clone.
#   make run    the embedded pipeline (no servers) with demo traffic
#   make test   lint + type-check + deploy-check + the whole test suite (starts a real Kafka)
#   make deploy-check   the Helm chart: helm lint, helm template, Kubernetes schema check

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.9
STAMP  := $(VENV)/.installed
# The native token decoder (native/, Rust) is built by the editable install with cargo;
# rustup puts cargo in ~/.cargo/bin, which a CI shell may not have on its PATH.
export PATH := $(HOME)/.cargo/bin:$(PATH)
NATIVE := native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs)

.PHONY: setup run test lint typecheck pytest deploy-check kafka-up kafka-down schemas clean

setup: $(STAMP)

# Re-install only when the lock, the project metadata or the native decoder changed.
$(STAMP): requirements.lock pyproject.toml $(NATIVE)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "meterline needs Python >= 3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	$(BIN)/uv pip sync --python $(BIN)/python --require-hashes requirements.lock
	@# The editable install builds the extension in place: drop the last one first, so a
	@# build that fails (or has no cargo) cannot leave a stale module importable.
	rm -f schemas/meterline_native*.so meterline_native*.so
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	@# The extension is optional for `pip install meterline` (the emitter SDK), never for
	@# dev and CI: its differential test and the processor's fast path need it.
	@# -P: not from the working directory (the repository), where an import can
	@# succeed that `meterline run` elsewhere would not make.
	@$(BIN)/python -P -c 'from schemas import meterline_native' 2>/dev/null || { \
		echo "meterline_native did not import: rebuilding it (uv may have reused a build made without cargo)"; \
		$(BIN)/uv pip install --python $(BIN)/python --no-deps --reinstall-package meterline -e . \
			&& $(BIN)/python -P -c 'from schemas import meterline_native'; } || { \
		echo "!!!!!!!! meterline_native (the native token decoder, native/) did not build."; \
		echo "!!!!!!!! Install Rust's cargo (https://rustup.rs; make also looks in ~/.cargo/bin),"; \
		echo "!!!!!!!! then run make setup again. The build's own errors:"; \
		echo "!!!!!!!!   $(BIN)/uv pip install -v --python $(BIN)/python --no-deps --reinstall-package meterline -e ."; \
		exit 1; }
	touch $(STAMP)

run: setup
	$(BIN)/meterline dev --demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

pytest: setup
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		echo "!!!!!!!! BROWSER TESTS WILL BE SKIPPED: /usr/bin/chromium or /usr/bin/chromedriver is missing."; \
		echo "!!!!!!!! Install Debian's packages: apt-get install -y chromium chromium-driver (.ci/run does)."; \
	fi
	$(BIN)/pytest

test: lint typecheck deploy-check pytest

# Builds a pinned Helm into .cache/tools/ the first time (Go needed; minutes), then ~3 s.
deploy-check: setup
	bash deploy/helm/check.sh

kafka-up:
	bash deploy/kafka/kafka.sh up

kafka-down:
	bash deploy/kafka/kafka.sh down

schemas: setup
	$(BIN)/python -m schemas.export

# Regenerate the hashed lock after changing dependencies in pyproject.toml.
lock: setup
	$(BIN)/uv pip compile pyproject.toml --extra server --extra dev --generate-hashes \
		--python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .cache .meterline .pytest_cache .mypy_cache .ruff_cache
