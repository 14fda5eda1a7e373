# Two commands: `make demo` (set up, then run the whole pipeline) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo reproduce serve test bench clean redis-server

# torch first: the pinned CPU build; installing anything that needs torch before it pulls CUDA wheels.
$(STAMP): pyproject.toml
	@command -v redis-server >/dev/null || $(MAKE) --no-print-directory redis-server
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

# Every stage at a small budget (pre-training 0.15, the rest 0.05 of the defaults) on samples of users
# (configs/demo.json): under 15 minutes on 2 cores from a fresh clone.
demo: setup
	$(BIN)/onereason run --config configs/demo.json --budget 0.05 --pretrain-budget 0.15 --name demo

# The full budget at the defaults, every stage (README: the measured wall time).
reproduce: setup
	$(BIN)/onereason run --dataset amazon-scientific --name reproduce

serve: setup  # after `make demo`: the service on http://127.0.0.1:8000 (see README, "Serving")
	$(BIN)/onereason serve start --name demo

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) runs

# The Redis store's tests start a real redis-server on loopback: Debian's package, as root or via sudo.
redis-server:
	@SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	$$SUDO apt-get install -y -q redis-server >/dev/null 2>&1 || \
	{ $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q redis-server >/dev/null 2>&1; } || \
	echo "warning: could not install redis-server; the Redis store tests will be skipped"
