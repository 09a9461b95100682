#!/usr/bin/env bash
# The MLflow tracking server: PostgreSQL backend store (database MLFLOW_DB), artifacts
# uploaded through the server and kept in MLFLOW_ARTIFACTS_DESTINATION (a volume).
#
# Environment: POSTGRES_USER, POSTGRES_PASSWORD (or PGPASSWORD), POSTGRES_HOST
# (postgres), POSTGRES_PORT (5432), MLFLOW_DB (mlflow), or MLFLOW_BACKEND_STORE_URI for
# another store; MLFLOW_ARTIFACTS_DESTINATION (/mlartifacts); MLFLOW_HOST (127.0.0.1;
# the compose file sets 0.0.0.0 inside its private network); MLFLOW_PORT (5000);
# MLFLOW_WORKERS (1: with more, uvicorn serves from a socket without TCP_NODELAY and
# each request on a kept-alive connection waits ~40 ms for a delayed ACK: 50 ms instead
# of 7 per request, measured); MLFLOW_ALLOWED_HOSTS (Host headers accepted, against DNS
# rebinding; default: MLflow's, localhost and private addresses).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

export_pgpassword
# MLflow's server-side job runner (GenAI scorers, trace rollups) starts a pool of worker
# processes; initstudy logs runs and artifacts only, so it stays off unless asked for.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
backend=${MLFLOW_BACKEND_STORE_URI:-$(postgres_url "${MLFLOW_DB:-mlflow}")}
port=${MLFLOW_PORT:-5000}
check_port MLFLOW_PORT "$port"
args=(
    --backend-store-uri "$backend"
    --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-/mlartifacts}"
    --serve-artifacts
    --host "${MLFLOW_HOST:-127.0.0.1}"
    --port "$port"
    --workers "${MLFLOW_WORKERS:-1}"
)
add_opt args --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-}"
exec mlflow server "${args[@]}"
