# unierase: the two commands of the README, and their parts.
#   make demo   set up (if needed) and run the erasure flow on the embedded default model
#   make test   set up (if needed) and run the test suite (tiny models, real services)
#   make test-slow   the behaviour tests on the real SmolLM2 (about an hour on 2 cores)
VENV ?= .venv
PY := $(VENV)/bin/python

# Offline by design: nothing is fetched from a model hub at run time; no telemetry.
export HF_HUB_OFFLINE=1
export HF_DATASETS_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export DO_NOT_TRACK=true
export MLFLOW_DISABLE_TELEMETRY=true
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export DVC_NO_ANALYTICS=1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120
export TOKENIZERS_PARALLELISM=false

.PHONY: setup demo test test-slow lint bench clean

$(VENV)/.installed: pyproject.toml scripts/setup_venv.sh
	bash scripts/setup_venv.sh $(VENV)

setup: $(VENV)/.installed

demo: setup
	$(PY) -m flows.erasure

test: setup
	$(PY) -m pytest tests -m "not slow"

test-slow: setup
	$(PY) -m pytest tests -m slow -s

lint: setup
	$(VENV)/bin/ruff check src flows tasks tests bench
	$(VENV)/bin/ruff format --check src flows tasks tests bench

bench: setup
	$(PY) -m bench.run_all

clean:
	rm -rf .pytest_cache build *.egg-info
