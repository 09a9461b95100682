#!/usr/bin/env bash
# Is a service up? Exit 0 when healthy. docker-compose.yml uses it as the health check of
# the mlflow and ray-head services (so dependants start in order), and tests/cluster uses
# it to wait for the same processes.
#
# Usage: deploy/healthcheck.sh mlflow|ray-head
#   mlflow    GET /health on 127.0.0.1:MLFLOW_PORT (5000)
#   ray-head  the GCS on 127.0.0.1:RAY_PORT (6379) answers an authenticated health
#             check, and the dashboard (job API) on 127.0.0.1:RAY_DASHBOARD_PORT (8265) is up
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

http_ok() {
    python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "$1" \
        2>/dev/null
}

case ${1:-} in
mlflow)
    http_ok "http://127.0.0.1:${MLFLOW_PORT:-5000}/health"
    ;;
ray-head)
    require_ray_token
    ray health-check --address "127.0.0.1:${RAY_PORT:-6379}" >/dev/null 2>&1
    http_ok "http://127.0.0.1:${RAY_DASHBOARD_PORT:-8265}/api/gcs_healthz"
    ;;
*)
    die "usage: healthcheck.sh mlflow|ray-head"
    ;;
esac
