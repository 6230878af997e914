# Two commands for a newcomer: `make run` and `make test`. Everything else is optional.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
NODE_STAMP := tests/e2e/node_modules/.installed
SDK_STAMP  := clients/js/node_modules/.installed
CHROMIUM   := /usr/bin/chromium

.PHONY: run test soak lint unit integration e2e bench clean fmt ops-tools sdk chromium

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q -e '.[dev,local]'
	touch $(STAMP)

# The seed's JavaScript client runs in Node with the `ws` package in the e2e tests.
$(NODE_STAMP): tests/e2e/package.json
	cd tests/e2e && npm install --no-audit --no-fund --silent
	touch $(NODE_STAMP)

# The client SDK (clients/js): TypeScript and Leaflet from npm; `npm ci` compiles the SDK
# into clients/js/dist (its `prepare` script). The page's copies in tracker_ws/web/static/sdk and
# vendor/leaflet are committed; `make sdk` refreshes them after an edit (a test checks them).
$(SDK_STAMP): clients/js/package.json clients/js/package-lock.json
	cd clients/js && npm ci --no-audit --no-fund --silent
	touch $(SDK_STAMP)

sdk: $(SDK_STAMP)
	cd clients/js && npm run build --silent

# The map page's browser test drives the Debian `chromium`: installed here when missing and
# root may (apt-get); otherwise that test is skipped and says why.
chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "[make] installing the Debian chromium for the map page's browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "[make] $(CHROMIUM) is missing and this is not root: the browser test will be skipped"; fi

run: $(STAMP)
	$(BIN)/python -m tracker_ws dev

# tests/ops checks the operator's kit in docker/ with promtool (Debian `prometheus`),
# docker-compose and haproxy: installed here when missing and we may (root with apt-get);
# otherwise those tests say what to install and skip.
OPS_TOOLS := promtool:prometheus docker-compose:docker-compose haproxy:haproxy
ops-tools:
	@missing=""; for t in $(OPS_TOOLS); do \
	  command -v $${t%%:*} >/dev/null || missing="$$missing $${t#*:}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing$$missing (Debian packages, for tests/ops)"; \
	  apt-get install -y -q --no-install-recommends $$missing >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $$missing >/dev/null; }; \
	else echo "note: tests/ops will skip until these are installed:$$missing"; fi

test: $(STAMP) $(NODE_STAMP) $(SDK_STAMP) chromium ops-tools
	$(BIN)/python -m pytest -q

# The randomised recovery and rolling-restart runs with new seeds (3 instances): ~2 min.
# Replay one with RECOVERY_SEED=… or ROLLING_SEED=… as printed.
soak: $(STAMP) $(NODE_STAMP) $(SDK_STAMP)
	$(BIN)/python -m pytest -q -m soak

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

lint: $(STAMP)
	$(BIN)/ruff check tracker_ws tracker_ws_dev tests bench
	$(BIN)/ruff format --check tracker_ws tracker_ws_dev tests bench
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format tracker_ws tracker_ws_dev tests bench
	$(BIN)/ruff check --fix tracker_ws tracker_ws_dev tests bench

BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[dev,local,bench]'
	touch $(BENCH_STAMP)

# Full benchmark run (~15 min on 2 cores); `make bench ARGS="--quick"` for a small one.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) tests/e2e/node_modules clients/js/node_modules clients/js/dist .pytest_cache .mypy_cache .ruff_cache *.egg-info
