#!/usr/bin/env bash
# Run a command with private PostgreSQL and MariaDB servers for the backend tests:
#
#   scripts/with-dbservers.sh CMD [ARGS...]
#
# When REACTIVE_TEST_POSTGRES_URL or REACTIVE_TEST_MYSQL_URL is already set (e.g. by
# .ci/run), CMD runs as it is. Otherwise both servers are started from a temporary
# directory on free loopback ports (scripts/dbservers.sh; installed from Debian's packages
# first when missing and we are root), CMD runs with the URLs exported, and the servers are
# stopped and removed afterwards. Without the packages (and no root to install them) it
# says loudly that the PostgreSQL and MySQL tests will be skipped, then runs CMD.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${REACTIVE_TEST_POSTGRES_URL:-}${REACTIVE_TEST_MYSQL_URL:-}" ]; then
    exec "$@"
fi

have_servers() {
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v mariadbd >/dev/null 2>&1
}

if ! have_servers && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "with-dbservers: installing postgresql and mariadb-server (Debian packages)..."
    scripts/dbservers.sh install
fi
if ! have_servers; then
    echo "################################################################################"
    echo "with-dbservers: PostgreSQL and MariaDB are not installed: the PostgreSQL and MySQL"
    echo "backend tests will be SKIPPED. Install them (as root: scripts/dbservers.sh install)"
    echo "or set REACTIVE_TEST_POSTGRES_URL / REACTIVE_TEST_MYSQL_URL."
    echo "################################################################################"
    exec "$@"
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
REACTIVE_PG_PORT=$(free_port)
REACTIVE_MYSQL_PORT=$(free_port)
export REACTIVE_PG_PORT REACTIVE_MYSQL_PORT
dbdir=$(mktemp -d "${TMPDIR:-/tmp}/reactive-dbs.XXXXXX")
chmod 755 "$dbdir"
cleanup() {
    scripts/dbservers.sh stop "$dbdir" >/dev/null 2>&1 || true
    rm -rf "$dbdir"
}
trap cleanup EXIT
eval "$(scripts/dbservers.sh start "$dbdir")"
export REACTIVE_TEST_POSTGRES_URL REACTIVE_TEST_MYSQL_URL
echo "with-dbservers: postgres $REACTIVE_TEST_POSTGRES_URL, mysql $REACTIVE_TEST_MYSQL_URL"
set +e
"$@"
status=$?
set -e
exit $status
