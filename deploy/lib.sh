# shellcheck shell=bash
# Shared helpers for the deploy/ scripts (sourced, not run).
#
# Every service of docker-compose.yml runs one of these scripts, and tests/cluster runs
# the very same scripts as local processes, so the two cannot drift. They are configured
# by environment variables only; defaults suit the compose network.

die() {
    echo "$(basename "$0"): $*" >&2
    exit 2
}

# A name that is safe to put in a URL or an SQL identifier unquoted.
check_name() {
    [[ $2 =~ ^[A-Za-z_][A-Za-z0-9_]{0,62}$ ]] || die "$1: '$2' must be 1-63 of A-Z a-z 0-9 _"
}

check_port() {
    [[ $2 =~ ^[0-9]{1,5}$ ]] || die "$1: '$2' is not a port number"
}

# The PostgreSQL URL of one database. It carries no password: libpq reads PGPASSWORD
# from the environment, so the password stays out of command lines and process lists.
postgres_url() {
    local user=${POSTGRES_USER:?set POSTGRES_USER}
    local host=${POSTGRES_HOST:-postgres}
    local port=${POSTGRES_PORT:-5432}
    check_name POSTGRES_USER "$user"
    check_name "database" "$1"
    check_port POSTGRES_PORT "$port"
    echo "postgresql://${user}@${host}:${port}/$1"
}

# Refuse the placeholder a secret has in .env.example.
refuse_placeholder() {
    if [[ ${!1:-} == change-me ]]; then
        die "$1 is still the placeholder 'change-me'; set a real secret in .env"
    fi
}

# Export PGPASSWORD from POSTGRES_PASSWORD for libpq, unless it is already set.
export_pgpassword() {
    if [[ -z ${PGPASSWORD:-} && -n ${POSTGRES_PASSWORD:-} ]]; then
        export PGPASSWORD=$POSTGRES_PASSWORD
    fi
    refuse_placeholder PGPASSWORD
}

# Ray's token authentication stays on: refuse to start a node or a driver without it.
require_ray_token() {
    export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
    export RAY_USAGE_STATS_ENABLED=${RAY_USAGE_STATS_ENABLED:-0}
    if [[ $RAY_AUTH_MODE != token ]]; then
        die "RAY_AUTH_MODE is '$RAY_AUTH_MODE'; these scripts run Ray with token authentication only"
    fi
    if [[ -z ${RAY_AUTH_TOKEN:-} && -z ${RAY_AUTH_TOKEN_PATH:-} ]]; then
        die "set RAY_AUTH_TOKEN (see .env.example) or RAY_AUTH_TOKEN_PATH"
    fi
    refuse_placeholder RAY_AUTH_TOKEN
}

# Append "--flag value" to the array named by $1 when value is not empty.
add_opt() {
    local -n _args=$1
    if [[ -n ${3:-} ]]; then
        _args+=("$2" "$3")
    fi
}
