#!/usr/bin/env bash
# A team's MLflow tracking server (docs/guides/team-setup.md): `mlflow server` with a PostgreSQL backend
# store and a local artifact root, all under one folder. PostgreSQL (Debian's `postgresql`
# package) is set up there on first use and reached over a unix socket in that folder only (no
# TCP port); psycopg (pip install -e '.[server]') connects MLflow to it.
#
#   scripts/mlflow_server.sh [--dir DIR] [--host HOST] [--port PORT] [--auth] [-- MLFLOW SERVER ARGS...]
#   scripts/mlflow_server.sh --dir DIR --stop     # stop the PostgreSQL a killed server left running
#
# --dir   the server's folder (default ./mlflow-server): pg/ (the database cluster, its socket and
#         log), artifacts/, and with --auth the basic-auth app's settings
# --host  the address to listen on (default 127.0.0.1: this machine only)
# --port  the port (default 5000)
# --auth  MLflow's basic-auth app (`--app-name basic-auth`): every request needs a user name and
#         password. The admin account is created on first start from MLFLOW_TRACKING_USERNAME and
#         MLFLOW_TRACKING_PASSWORD (or MLFLOW_AUTH_ADMIN_USERNAME / _PASSWORD), read from the
#         environment only, the same variables the clients use.
# Anything after `--` goes to `mlflow server` as it is (e.g. -- --workers 2 --allowed-hosts mlflow-box:5000).
#
# Runs in the foreground; Ctrl-C or SIGTERM stops MLflow, then the PostgreSQL it started. As root,
# PostgreSQL (which refuses to run as root) runs as the `postgres` user (PG_OS_USER to choose
# another), so DIR must be a folder that user can reach.
set -euo pipefail

DIR=./mlflow-server
HOST=127.0.0.1
PORT=5000
AUTH=0
STOP=0
PG_PORT=5432 # names the socket file only: PostgreSQL listens on no TCP port
EXTRA=()
PYTHON=${PYTHON:-python3}

usage() { sed -n '7,8p' "$0" | sed 's/^# *//' >&2; }
die() {
    echo "error: $*" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
    --dir) DIR=${2:?--dir needs a folder} && shift 2 ;;
    --host) HOST=${2:?--host needs an address} && shift 2 ;;
    --port) PORT=${2:?--port needs a number} && shift 2 ;;
    --auth) AUTH=1 && shift ;;
    --stop) STOP=1 && shift ;;
    --) shift && EXTRA=("$@") && break ;;
    -h | --help) usage && exit 0 ;;
    *) usage && die "unknown argument $1" ;;
    esac
done

# PostgreSQL's programs: on PATH, else Debian's versioned folder (the newest there), or PG_BIN.
if [ -z "${PG_BIN:-}" ]; then
    if command -v pg_ctl >/dev/null; then
        PG_BIN=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
    else
        PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    fi
fi
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/pg_ctl" ] ||
    die "PostgreSQL is not installed: apt-get install postgresql (or set PG_BIN to the folder of pg_ctl)"

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
PG_DIR=$DIR/pg
PG_DATA=$PG_DIR/data
PG_SOCKET=$PG_DIR/socket
PG_LOG=$PG_DIR/postgres.log

# PostgreSQL will not run as root: as root it runs as PG_OS_USER, and only that user and root can
# open its socket folder (mode 0700), so the database needs no password.
if [ "$(id -u)" -eq 0 ]; then
    PG_OS_USER=${PG_OS_USER:-postgres}
    id "$PG_OS_USER" >/dev/null 2>&1 || die "user $PG_OS_USER does not exist (apt-get install postgresql creates it; or set PG_OS_USER)"
    as_pg() { runuser -u "$PG_OS_USER" -- "$@"; }
else
    as_pg() { "$@"; }
fi

pg_ctl_() { as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" "$@"; }

if [ "$STOP" -eq 1 ]; then
    if [ -d "$PG_DATA" ] && pg_ctl_ status >/dev/null 2>&1; then
        pg_ctl_ stop -m fast -w >/dev/null && echo "stopped PostgreSQL of $DIR"
    fi
    exit 0
fi

# The socket's path must fit a sockaddr_un (107 bytes).
[ ${#PG_SOCKET} -le 90 ] || die "--dir $DIR is too long a path for PostgreSQL's socket: choose a shorter one"
"$PYTHON" -c 'import psycopg' 2>/dev/null || die "psycopg is missing: pip install -e '.[server]' (or pip install 'psycopg[binary]')"
"$PYTHON" -c 'import mlflow' 2>/dev/null || die "mlflow is missing from $PYTHON (activate the project's venv, or set PYTHON)"

if [ ! -s "$PG_DATA/PG_VERSION" ]; then
    mkdir -p "$PG_DIR"
    [ "$(id -u)" -ne 0 ] || chown "$PG_OS_USER" "$PG_DIR"
    chmod 0700 "$PG_DIR"
    as_pg test -w "$PG_DIR" || die "${PG_OS_USER:-$(id -un)} cannot write $PG_DIR: choose a --dir that user can reach (e.g. under /srv)"
    echo "initialising the PostgreSQL cluster in $PG_DATA" >&2
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U mlflow --auth-local=trust --auth-host=reject -E UTF8 >"$PG_DIR/initdb.log" 2>&1 ||
        die "initdb failed: see $PG_DIR/initdb.log"
fi
as_pg mkdir -p "$PG_SOCKET"

STARTED_PG=0
MLFLOW_PID=
cleanup() {
    if [ -n "$MLFLOW_PID" ] && kill -0 "$MLFLOW_PID" 2>/dev/null; then
        kill -TERM "$MLFLOW_PID" 2>/dev/null || true
        wait "$MLFLOW_PID" 2>/dev/null || true
    fi
    if [ "$STARTED_PG" -eq 1 ] && pg_ctl_ status >/dev/null 2>&1; then
        pg_ctl_ stop -m fast -w >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

if ! pg_ctl_ status >/dev/null 2>&1; then
    pg_ctl_ start -w -t 60 -l "$PG_LOG" \
        -o "-k '$PG_SOCKET' -p $PG_PORT -c listen_addresses=''" >/dev/null ||
        die "PostgreSQL did not start: see $PG_LOG"
    STARTED_PG=1
fi
psql_() { as_pg "$PG_BIN/psql" -h "$PG_SOCKET" -p "$PG_PORT" -U mlflow -d postgres -tAc "$1"; }
for db in mlflow mlflow_auth; do
    [ "$(psql_ "SELECT 1 FROM pg_database WHERE datname = '$db'")" = 1 ] || psql_ "CREATE DATABASE $db" >/dev/null
done

# SQLAlchemy's psycopg 3 driver over the unix socket: the folder goes in the `host` query field.
store_uri() {
    "$PYTHON" -c 'import sys, urllib.parse as u; print("postgresql+psycopg://mlflow@/%s?host=%s&port=%s" % (sys.argv[1], u.quote(sys.argv[2], safe="/"), sys.argv[3]))' \
        "$1" "$PG_SOCKET" "$PG_PORT"
}
BACKEND=$(store_uri mlflow)

ARGS=(--backend-store-uri "$BACKEND" --artifacts-destination "$DIR/artifacts" --host "$HOST" --port "$PORT")
if [ "$AUTH" -eq 1 ]; then
    export MLFLOW_AUTH_ADMIN_USERNAME=${MLFLOW_AUTH_ADMIN_USERNAME:-${MLFLOW_TRACKING_USERNAME:-}}
    export MLFLOW_AUTH_ADMIN_PASSWORD=${MLFLOW_AUTH_ADMIN_PASSWORD:-${MLFLOW_TRACKING_PASSWORD:-}}
    [ -n "$MLFLOW_AUTH_ADMIN_USERNAME" ] && [ -n "$MLFLOW_AUTH_ADMIN_PASSWORD" ] ||
        die "--auth needs the admin's user name and password in the environment: MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    # MLflow's rule for a new admin, checked here to say so in one line instead of its traceback.
    [ ${#MLFLOW_AUTH_ADMIN_PASSWORD} -ge 12 ] || die "the admin password must be at least 12 characters (MLflow's rule)"
    # The auth app's own settings (no secret in them: the admin comes from the environment) and
    # its users in their own database; the CSRF key kept in DIR so that a restart keeps sessions.
    cat >"$DIR/basic_auth.ini" <<EOF
[mlflow]
default_permission = READ
database_uri = $(store_uri mlflow_auth)
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
    export MLFLOW_AUTH_CONFIG_PATH=$DIR/basic_auth.ini
    if [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
        [ -s "$DIR/flask_secret" ] || (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_hex(32))' >"$DIR/flask_secret")
        MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$DIR/flask_secret")
        export MLFLOW_FLASK_SERVER_SECRET_KEY
    fi
    ARGS+=(--app-name basic-auth)
elif [ "$HOST" != 127.0.0.1 ] && [ "$HOST" != localhost ] && [ "$HOST" != ::1 ]; then
    echo "warning: listening on $HOST without --auth: anyone who reaches port $PORT can read and change every run" >&2
fi

echo "MLflow tracking server on http://$HOST:$PORT (store: PostgreSQL in $PG_DATA, artifacts: $DIR/artifacts)" >&2
"$PYTHON" -m mlflow server "${ARGS[@]}" "${EXTRA[@]}" &
MLFLOW_PID=$!
trap 'kill -TERM "$MLFLOW_PID" 2>/dev/null || true' INT TERM
status=0
wait "$MLFLOW_PID" || status=$?
# A trapped signal ends the first wait early: wait for MLflow to have stopped.
wait "$MLFLOW_PID" 2>/dev/null || true
exit "$status"
