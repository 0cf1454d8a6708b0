#!/usr/bin/env bash
# Serves the embedded MLflow store (tracking, registry, UI) on loopback.
#   bash mlflow/server.sh [PORT]        # from the repo root; PORT defaults to 5000
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PORT="${1:-5000}"
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
exec "${VENV:-$ROOT/.venv}/bin/mlflow" server --host 127.0.0.1 --port "$PORT" --workers 1 \
  --backend-store-uri "sqlite:///$ROOT/mlflow/mlflow.db" \
  --default-artifact-root "$ROOT/mlflow/artifacts"
