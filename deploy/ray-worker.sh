#!/usr/bin/env bash
# A Ray worker node that joins the head at RAY_HEAD_ADDRESS, in the foreground; stopping
# this process stops the node. Scale with `docker compose up --scale ray-worker=N`.
#
# Environment: RAY_AUTH_TOKEN (required, the head's); RAY_HEAD_ADDRESS (ray-head:6379);
# optional: RAY_NODE_IP, RAY_NUM_CPUS (default: every CPU the node sees), RAY_NUM_GPUS,
# RAY_OBJECT_STORE_MEMORY (bytes), RAY_TEMP_DIR, RAY_DASHBOARD_AGENT_PORT,
# RAY_METRICS_PORT (set these two when several nodes share one host).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

require_ray_token
args=(
    --address "${RAY_HEAD_ADDRESS:-ray-head:6379}"
    --block
    --disable-usage-stats
)
add_opt args --node-ip-address "${RAY_NODE_IP:-}"
add_opt args --num-cpus "${RAY_NUM_CPUS:-}"
add_opt args --num-gpus "${RAY_NUM_GPUS:-}"
add_opt args --object-store-memory "${RAY_OBJECT_STORE_MEMORY:-}"
add_opt args --temp-dir "${RAY_TEMP_DIR:-}"
add_opt args --dashboard-agent-listen-port "${RAY_DASHBOARD_AGENT_PORT:-}"
add_opt args --metrics-export-port "${RAY_METRICS_PORT:-}"
exec ray start "${args[@]}"
