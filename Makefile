# unierase: the two commands of the README, and their parts.
#   make demo   set up (if needed) and run the erasure flow on the embedded default model
#   make test   set up (if needed) and run every test: tiny models, real services, and the behaviour
#               tests on the real SmolLM2 (two workers on 2 cores; CI runs this)
#   make test-fast   the tests without the SmolLM2 behaviour tests
#   make test-slow   only the SmolLM2 behaviour tests, with their figures printed
#   make serve  Prefect, MLflow and the scheduled deployment on loopback until Ctrl-C (unierase serve)
#   make deploy-trial   the production stack on this machine (PostgreSQL, S3, MLflow, Prefect pool): docs/deploy.md
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

.PHONY: setup demo serve test test-fast test-slow lint bench deploy-trial clean

$(VENV)/.installed: pyproject.toml scripts/setup_venv.sh
	bash scripts/setup_venv.sh $(VENV)

setup: $(VENV)/.installed

demo: setup
	$(PY) -m flows.erasure

serve: setup
	$(PY) -m unierase.cli serve

test: setup
	$(PY) -m pytest tests -n 2 --dist loadgroup --no-loadscope-reorder --durations=15

test-fast: setup
	$(PY) -m pytest tests -m "not slow" -n 2 --dist loadgroup --no-loadscope-reorder

test-slow: setup
	$(PY) -m pytest tests -m slow -s

lint: setup
	$(VENV)/bin/ruff check src flows tasks tests bench
	$(VENV)/bin/ruff format --check src flows tasks tests bench

bench: setup
	$(PY) -m bench.run_all

deploy-trial: setup
	$(PY) scripts/trial_stack.py --dir outputs/trial

clean:
	rm -rf .pytest_cache build *.egg-info
