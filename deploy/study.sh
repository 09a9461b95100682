#!/usr/bin/env bash
# Launch a study on the cluster as a Ray job: `ray job submit` sends the working folder
# to the head node, where the driver (`initstudy run ... --address auto`) runs next to
# the GCS; this script streams its output and exits with its status. The study outlives
# this process: stop following with Ctrl-C, and `ray job logs` / `initstudy status` later.
#
# Usage: deploy/study.sh SPEC [more `initstudy run` options, e.g. --pack-size 4]
#
# Environment: RAY_AUTH_TOKEN (required); RAY_DASHBOARD_URL (http://ray-head:8265);
# POSTGRES_USER, POSTGRES_PASSWORD (or PGPASSWORD), POSTGRES_HOST (postgres),
# POSTGRES_PORT (5432), OPTUNA_DB (optuna), or OPTUNA_STORAGE for another storage URL;
# MLFLOW_TRACKING_URI (http://mlflow:5000); STUDY_WORKING_DIR (.: the folder sent along,
# minus what .gitignore excludes; SPEC is read relative to it).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

[[ $# -ge 1 ]] || die "usage: study.sh SPEC [initstudy run options]"
spec=$1
shift
require_ray_token
export_pgpassword
storage=${OPTUNA_STORAGE:-$(postgres_url "${OPTUNA_DB:-optuna}")}
tracking=${MLFLOW_TRACKING_URI:-http://mlflow:5000}

# The driver needs the database password. It travels in the job's runtime environment,
# written to a private file so it never shows in a process list; anyone holding the Ray
# token can read it in the job's details, as they can run any code on the cluster anyway.
runtime_env=$(mktemp)
trap 'rm -f "$runtime_env"' EXIT
python -c '
import json, os, sys
env = {k: os.environ[k] for k in ("PGPASSWORD",) if os.environ.get(k)}
with open(sys.argv[1], "w") as f:
    json.dump({"env_vars": env}, f)
' "$runtime_env"

ray job submit \
    --address "${RAY_DASHBOARD_URL:-http://ray-head:8265}" \
    --working-dir "${STUDY_WORKING_DIR:-.}" \
    --runtime-env "$runtime_env" \
    -- python -m pipeline.cli run "$spec" \
    --address auto --storage "$storage" --tracking-uri "$tracking" "$@"
