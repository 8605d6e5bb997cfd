#!/usr/bin/env bash
# Private PostgreSQL and MariaDB servers on 127.0.0.1, for tests and benchmarks.
#
#   scripts/dbservers.sh install        apt-get install postgresql mariadb-server (if missing)
#   scripts/dbservers.sh start DIR      start both from data directories under DIR (created
#                                       on first use); prints the `export` lines of
#                                       REACTIVE_TEST_POSTGRES_URL and REACTIVE_TEST_MYSQL_URL
#   scripts/dbservers.sh stop DIR       stop both
#
# Neither is the system service: each runs from DIR, listens on 127.0.0.1 only, and stops
# with `stop`. Ports: $REACTIVE_PG_PORT (55432) and $REACTIVE_MYSQL_PORT (53306).
set -euo pipefail

cmd=${1:-}
dir=${2:-}
pg_port=${REACTIVE_PG_PORT:-55432}
my_port=${REACTIVE_MYSQL_PORT:-53306}

pg_bin() {
    local b
    b=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$b" ] || { echo "postgresql is not installed" >&2; exit 1; }
    echo "$b"
}

as_user() {  # run as an unprivileged user when we are root (initdb and mariadbd refuse root)
    local user=$1; shift
    if [ "$(id -u)" = 0 ]; then runuser -u "$user" -- "$@"; else "$@"; fi
}

install() {
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v mariadbd >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq postgresql mariadb-server >/dev/null
    fi
}

start() {
    [ -n "$dir" ] || { echo "usage: $0 start DIR" >&2; exit 2; }
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    local bin pg_user=postgres my_user=mysql
    bin=$(pg_bin)
    [ "$(id -u)" = 0 ] || { pg_user=$(id -un); my_user=$(id -un); }
    # PostgreSQL
    mkdir -p "$dir/pg" "$dir/pg-run" "$dir/mysql" "$dir/mysql-run"
    [ "$(id -u)" != 0 ] || chown "$pg_user" "$dir/pg" "$dir/pg-run"
    [ "$(id -u)" != 0 ] || chown -R "$my_user" "$dir/mysql" "$dir/mysql-run"
    if [ ! -f "$dir/pg/PG_VERSION" ]; then
        as_user "$pg_user" "$bin/initdb" -D "$dir/pg" -U reactive --auth=trust -E UTF8 >/dev/null
    fi
    as_user "$pg_user" "$bin/pg_ctl" -D "$dir/pg" status >/dev/null 2>&1 || \
    as_user "$pg_user" "$bin/pg_ctl" -D "$dir/pg" -l "$dir/pg-run/pg.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $dir/pg-run -c fsync=on -c max_connections=200" start >/dev/null
    "$bin/psql" -h 127.0.0.1 -p "$pg_port" -U reactive -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'reactive_test'" | grep -q 1 \
        || "$bin/createdb" -h 127.0.0.1 -p "$pg_port" -U reactive reactive_test
    # MariaDB
    if [ ! -d "$dir/mysql/mysql" ]; then
        mariadb-install-db --datadir="$dir/mysql" --user="$my_user" \
            --auth-root-authentication-method=normal --skip-test-db >/dev/null 2>&1
        [ "$(id -u)" != 0 ] || chown -R "$my_user" "$dir/mysql"
    fi
    local sock="$dir/mysql-run/mysql.sock"
    # A plain `if` (not `a || b &`): an async list would run in a subshell that keeps this
    # script's stdout open, and the caller's `$(...)` would wait for mariadbd to exit.
    if ! mariadb -S "$sock" -u root -e "SELECT 1" >/dev/null 2>&1; then
        mariadbd --no-defaults --datadir="$dir/mysql" --user="$my_user" \
            --bind-address=127.0.0.1 --port="$my_port" --socket="$sock" \
            --pid-file="$dir/mysql-run/mysql.pid" --log-error="$dir/mysql-run/mysql.log" \
            --innodb-flush-log-at-trx-commit=1 --max-connections=200 </dev/null >/dev/null 2>&1 &
    fi
    for _ in $(seq 1 120); do
        mariadb -S "$sock" -u root -e "SELECT 1" >/dev/null 2>&1 && break
        sleep 0.5
    done
    mariadb -S "$sock" -u root -e "
        CREATE DATABASE IF NOT EXISTS reactive_test;
        CREATE USER IF NOT EXISTS 'reactive'@'127.0.0.1' IDENTIFIED BY 'reactive';
        CREATE USER IF NOT EXISTS 'reactive'@'localhost' IDENTIFIED BY 'reactive';
        GRANT ALL PRIVILEGES ON *.* TO 'reactive'@'127.0.0.1';
        GRANT ALL PRIVILEGES ON *.* TO 'reactive'@'localhost';
        FLUSH PRIVILEGES;"
    echo "export REACTIVE_TEST_POSTGRES_URL=postgresql://reactive@127.0.0.1:$pg_port/reactive_test"
    echo "export REACTIVE_TEST_MYSQL_URL=mysql://reactive:reactive@127.0.0.1:$my_port/reactive_test"
}

stop() {
    [ -n "$dir" ] || { echo "usage: $0 stop DIR" >&2; exit 2; }
    dir=$(cd "$dir" && pwd)
    local bin pg_user=postgres
    bin=$(pg_bin)
    [ "$(id -u)" = 0 ] || pg_user=$(id -un)
    as_user "$pg_user" "$bin/pg_ctl" -D "$dir/pg" -m fast -w stop >/dev/null 2>&1 || true
    if [ -f "$dir/mysql-run/mysql.pid" ]; then
        kill "$(cat "$dir/mysql-run/mysql.pid")" 2>/dev/null || true
        for _ in $(seq 1 60); do [ -f "$dir/mysql-run/mysql.pid" ] || break; sleep 0.5; done
    fi
}

case "$cmd" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 install | start DIR | stop DIR" >&2; exit 2 ;;
esac
