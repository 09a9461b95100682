#!/usr/bin/env bash
# Create the two databases of an initstudy cluster: one for the Optuna study storage
# (OPTUNA_DB, default optuna) and one for the MLflow backend store (MLFLOW_DB, default
# mlflow), both owned by POSTGRES_USER. Idempotent.
#
# docker-compose.yml mounts it into the postgres image's /docker-entrypoint-initdb.d/, so
# the image runs it once, when its data volume is new (self-contained for that reason);
# tests/cluster runs it against a throwaway server. psql finds the server through the
# usual PGHOST / PGPORT / PGPASSWORD variables (the image's init server needs none).
set -euo pipefail

user=${POSTGRES_USER:?set POSTGRES_USER}
if [[ ${POSTGRES_PASSWORD:-} == change-me ]]; then
    echo "postgres-init: POSTGRES_PASSWORD is still the placeholder 'change-me'; set it in .env" >&2
    exit 2
fi
for name in "$user" "${OPTUNA_DB:-optuna}" "${MLFLOW_DB:-mlflow}"; do
    if ! [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]{0,62}$ ]]; then
        echo "postgres-init: '$name' must be 1-63 of A-Z a-z 0-9 _" >&2
        exit 2
    fi
done
psql_() {
    psql -v ON_ERROR_STOP=1 --no-psqlrc -qtA --username "$user" --dbname postgres "$@"
}
for db in "${OPTUNA_DB:-optuna}" "${MLFLOW_DB:-mlflow}"; do
    if [[ $(psql_ -c "SELECT 1 FROM pg_database WHERE datname = '$db'") == 1 ]]; then
        echo "postgres-init: database $db exists"
    else
        psql_ -c "CREATE DATABASE \"$db\" OWNER \"$user\""
        echo "postgres-init: created database $db"
    fi
done
