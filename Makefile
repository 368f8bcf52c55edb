# The two fresh-machine commands in the README are `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install serve test redis bench

# Installs podgate with the local model and the test clients into $(VENV).
# llama-cpp-python builds from source the first time (about 9 minutes on 2 cores);
# pip's wheel cache makes later installs quick.
install: $(BIN)/podgate

$(BIN)/podgate: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[local,test]'
	touch $@

# The embedded default: local endpoint + SmolLM2 worker + proxy at http://127.0.0.1:8000/v1
serve: install
	$(BIN)/podgate serve

# Redis backs the multi-replica store tests; start one if none answers.
redis:
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || \
	  redis-server --daemonize yes --port 6379 --save "" --appendonly no

test: install redis
	$(BIN)/pytest

bench: install
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done
