#!/usr/bin/env bash
# The Ray head node (GCS, dashboard with the job API, Ray Client server), in the
# foreground; stopping this process stops the node. Token authentication is required.
#
# Environment: RAY_AUTH_TOKEN (required); RAY_PORT (6379); RAY_DASHBOARD_HOST (127.0.0.1;
# the compose file sets 0.0.0.0 inside its private network); RAY_DASHBOARD_PORT (8265);
# RAY_CLIENT_PORT (10001); optional: RAY_NODE_IP, RAY_NUM_CPUS, RAY_NUM_GPUS,
# RAY_OBJECT_STORE_MEMORY (bytes), RAY_TEMP_DIR, RAY_DASHBOARD_AGENT_PORT,
# RAY_METRICS_PORT (set these two when several nodes share one host).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

require_ray_token
args=(
    --head
    --block
    --disable-usage-stats
    --port "${RAY_PORT:-6379}"
    --include-dashboard true
    --dashboard-host "${RAY_DASHBOARD_HOST:-127.0.0.1}"
    --dashboard-port "${RAY_DASHBOARD_PORT:-8265}"
    --ray-client-server-port "${RAY_CLIENT_PORT:-10001}"
)
add_opt args --node-ip-address "${RAY_NODE_IP:-}"
add_opt args --num-cpus "${RAY_NUM_CPUS:-}"
add_opt args --num-gpus "${RAY_NUM_GPUS:-}"
add_opt args --object-store-memory "${RAY_OBJECT_STORE_MEMORY:-}"
add_opt args --temp-dir "${RAY_TEMP_DIR:-}"
add_opt args --dashboard-agent-listen-port "${RAY_DASHBOARD_AGENT_PORT:-}"
add_opt args --metrics-export-port "${RAY_METRICS_PORT:-}"
exec ray start "${args[@]}"
