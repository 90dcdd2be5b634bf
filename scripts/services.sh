#!/usr/bin/env bash
# Starts, stops and inspects the development and test services of opsbuffer on
# loopback: a main PostgreSQL server, a hot-standby streaming replica of it (the
# "local" database in the printed URLs) and Redis with an append-only file.
#
# Usage: scripts/services.sh start|stop|status|pause-replay|resume-replay|stop-main|start-main|restart-redis|env
#
# Environment variables:
#   OPSBUFFER_SERVICES_DIR  absolute path of the data folder (default /var/tmp/opsbuffer-services)
#   OPSBUFFER_MAIN_PORT     port of the main PostgreSQL server (default 54320)
#   OPSBUFFER_LOCAL_PORT    port of the PostgreSQL replica (default 54321)
#   OPSBUFFER_REDIS_PORT    port of Redis (default 63790)
#   OPSBUFFER_WAIT_SECONDS  maximum time in seconds for each wait (default 60)
#
# PostgreSQL refuses to run as root, so a root caller runs the PostgreSQL server
# tools as the postgres system user. Everything else runs as the caller.
# The script only starts and stops processes it finds through its own data folder,
# so other PostgreSQL and Redis servers on the machine are left alone.
set -euo pipefail

SERVICES_DIR=${OPSBUFFER_SERVICES_DIR:-/var/tmp/opsbuffer-services}
MAIN_PORT=${OPSBUFFER_MAIN_PORT:-54320}
LOCAL_PORT=${OPSBUFFER_LOCAL_PORT:-54321}
REDIS_PORT=${OPSBUFFER_REDIS_PORT:-63790}
WAIT_SECONDS=${OPSBUFFER_WAIT_SECONDS:-60}

PG_ROOT=$SERVICES_DIR/postgres
PG_SOCKET_DIR=$PG_ROOT/sockets
MAIN_DATA=$PG_ROOT/main
MAIN_LOG=$PG_ROOT/main.log
REPLICA_DATA=$PG_ROOT/replica
REPLICA_LOG=$PG_ROOT/replica.log
REDIS_DIR=$SERVICES_DIR/redis
REDIS_PID_FILE=$REDIS_DIR/redis.pid
REDIS_LOG=$REDIS_DIR/redis.log

# Directory of the PostgreSQL binaries, set by find_pg_bin_dir.
PG_BIN=

log() {
    printf 'services: %s\n' "$*" >&2
}

die() {
    printf 'services: error: %s\n' "$*" >&2
    exit 1
}

usage() {
    cat <<EOF
Usage: $0 COMMAND

Commands:
  start          install missing packages, then start main PostgreSQL, its replica and Redis
                 (only what is not running) and print the connection URLs
  stop           stop the replica, main and Redis (fast shutdown), keeping their data
  status         print the state of each service; exit 0 if all three run, 3 otherwise
  pause-replay   pause WAL replay on the replica
  resume-replay  resume WAL replay on the replica
  stop-main      stop only the main PostgreSQL server
  start-main     start only the main PostgreSQL server
  restart-redis  restart Redis with the same options, reloading its append-only file
  env            print the connection URLs as NAME=value lines

Environment variables: OPSBUFFER_SERVICES_DIR (default /var/tmp/opsbuffer-services),
OPSBUFFER_MAIN_PORT (54320), OPSBUFFER_LOCAL_PORT (54321), OPSBUFFER_REDIS_PORT (63790),
OPSBUFFER_WAIT_SECONDS (maximum time in seconds for each wait, 60).
EOF
}

# ---------------------------------------------------------------------------
# Settings and environment

validate_settings() {
    local name value
    for name in OPSBUFFER_MAIN_PORT OPSBUFFER_LOCAL_PORT OPSBUFFER_REDIS_PORT; do
        value=${!name:-}
        [[ -z $value ]] && continue
        if ! [[ $value =~ ^[0-9]+$ ]] || ((value < 1 || value > 65535)); then
            die "invalid $name '$value'. Expected a port number from 1 to 65535."
        fi
    done
    if [[ $MAIN_PORT == "$LOCAL_PORT" ]]; then
        die "OPSBUFFER_MAIN_PORT and OPSBUFFER_LOCAL_PORT are both $MAIN_PORT. Choose two different ports."
    fi
    if ! [[ $WAIT_SECONDS =~ ^[0-9]+$ ]] || ((WAIT_SECONDS < 1)); then
        die "invalid OPSBUFFER_WAIT_SECONDS '$WAIT_SECONDS'. Expected a positive whole number of seconds."
    fi
    if [[ $SERVICES_DIR != /* ]]; then
        die "invalid OPSBUFFER_SERVICES_DIR '$SERVICES_DIR'. Expected an absolute path."
    fi
    # A Unix socket path is limited to 107 bytes on Linux (sun_path in unix(7)),
    # and PostgreSQL appends "/.s.PGSQL.<port>.lock" to the socket directory.
    local max_socket_dir_length=85
    if ((${#PG_SOCKET_DIR} > max_socket_dir_length)); then
        die "OPSBUFFER_SERVICES_DIR '$SERVICES_DIR' is too long for the PostgreSQL socket path. Use a path of at most $((max_socket_dir_length - ${#PG_SOCKET_DIR} + ${#SERVICES_DIR})) characters."
    fi
}

is_root() {
    [[ $EUID -eq 0 ]]
}

# Runs a command as the user that owns the PostgreSQL files: postgres when the
# caller is root, the caller otherwise.
as_postgres() {
    if ! is_root; then
        "$@"
        return
    fi
    local postgres_home
    postgres_home=$(getent passwd postgres | cut -d: -f6)
    # The subshell changes to / because the caller's folder, such as the
    # repository, may not be readable by postgres.
    if command -v runuser >/dev/null; then
        (cd / && runuser -u postgres -- env HOME="$postgres_home" "$@")
    else
        # su passes the arguments after the user name to the shell as $0 and $@.
        # The -- stops su from parsing them as its own options.
        # shellcheck disable=SC2016
        (cd / && su -s /bin/sh -c 'exec env HOME="$(getent passwd postgres | cut -d: -f6)" "$0" "$@"' -- postgres "$@")
    fi
}

# Sets PG_BIN to the bin folder of the highest PostgreSQL version that has
# server binaries. Returns 1 if none is installed.
find_pg_bin_dir() {
    local initdb version highest=
    for initdb in /usr/lib/postgresql/*/bin/initdb; do
        [[ -x $initdb ]] || continue
        version=${initdb#/usr/lib/postgresql/}
        version=${version%%/*}
        [[ $version =~ ^[0-9]+$ ]] || continue
        if [[ -z $highest ]] || ((version > highest)); then
            highest=$version
        fi
    done
    [[ -n $highest ]] || return 1
    PG_BIN=/usr/lib/postgresql/$highest/bin
}

require_pg_bin_dir() {
    find_pg_bin_dir || die "PostgreSQL server binaries not found under /usr/lib/postgresql/<version>/bin. Run '$0 start' to install them."
}

# Runs apt-get non-interactively, through sudo when the caller is not root.
run_apt_get() {
    if is_root; then
        DEBIAN_FRONTEND=noninteractive apt-get "$@"
    elif command -v sudo >/dev/null; then
        sudo env DEBIAN_FRONTEND=noninteractive apt-get "$@"
    else
        die "cannot run apt-get because this user is not root and sudo was not found. Install the packages postgresql and redis-server."
    fi
}

install_missing_packages() {
    local packages=()
    find_pg_bin_dir || packages+=(postgresql)
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        packages+=(redis-server)
    fi
    ((${#packages[@]} > 0)) || return 0

    command -v apt-get >/dev/null || die "missing packages ${packages[*]}, and apt-get was not found. Install them with the package manager of this system."
    log "installing ${packages[*]}"
    # apt-get update is slow and usually not needed, so it runs only when the
    # install fails with the current package lists.
    if ! run_apt_get install -y --no-install-recommends "${packages[@]}" >&2; then
        log "install failed; updating package lists and retrying"
        run_apt_get update >&2
        run_apt_get install -y --no-install-recommends "${packages[@]}" >&2
    fi
    require_pg_bin_dir
}

# Creates the data folder and makes its PostgreSQL part owned and reachable by
# the user that runs PostgreSQL.
prepare_folders() {
    mkdir -p "$SERVICES_DIR" "$REDIS_DIR" "$PG_ROOT"
    chmod 755 "$SERVICES_DIR" "$PG_ROOT"
    if is_root; then
        getent passwd postgres >/dev/null || die "system user postgres not found. Install the postgresql package, which creates it."
        if [[ $(stat -c %U "$PG_ROOT") != postgres ]]; then
            chown -R postgres:postgres "$PG_ROOT"
        fi
    fi
    if ! as_postgres test -w "$PG_ROOT" -a -x "$PG_ROOT"; then
        die "user $(as_postgres id -un) cannot write to $PG_ROOT. Every parent folder must be searchable by that user (chmod o+x), or set OPSBUFFER_SERVICES_DIR to another folder."
    fi
    as_postgres mkdir -p "$PG_SOCKET_DIR"
}

# Serialises commands that start or stop services, so that two runs on the same
# data folder cannot initialise or copy a data directory at the same time.
lock_services_dir() {
    command -v flock >/dev/null || return 0
    # Without a data folder there is nothing to start or stop concurrently.
    [[ -d $SERVICES_DIR ]] || return 0
    exec 9>"$SERVICES_DIR/services.lock"
    if ! flock -w "$WAIT_SECONDS" 9; then
        die "timed out after ${WAIT_SECONDS}s waiting for another run of $0 to release the lock file $SERVICES_DIR/services.lock."
    fi
}

# Runs a command every half second until it succeeds. After WAIT_SECONDS it
# prints the end of the log file and exits with an error.
wait_until() {
    local description=$1 log_file=$2
    shift 2
    local deadline=$((SECONDS + WAIT_SECONDS))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            print_log_tail "$log_file"
            die "timed out after ${WAIT_SECONDS}s waiting for $description. See $log_file."
        fi
        sleep 0.5
    done
}

print_log_tail() {
    local log_file=$1
    if [[ -r $log_file ]]; then
        printf 'services: last lines of %s:\n' "$log_file" >&2
        tail -n 20 "$log_file" >&2
    fi
}

# ---------------------------------------------------------------------------
# PostgreSQL

# Runs psql as the superuser postgres over TCP. Extra arguments go to psql.
psql_admin() {
    local port=$1 database=$2
    shift 2
    "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$database" "$@"
}

pg_is_initialised() {
    local data_dir=$1
    [[ -f $data_dir/PG_VERSION ]]
}

pg_is_running() {
    local data_dir=$1
    pg_is_initialised "$data_dir" && as_postgres "$PG_BIN/pg_ctl" status -D "$data_dir" >/dev/null 2>&1
}

pg_accepts_connections() {
    local port=$1
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres
}

# Prints the major version of the binaries in PG_BIN, such as 15.
pg_binary_major_version() {
    basename "$(dirname "$PG_BIN")"
}

# Exits with an error when the data directory was created by another major
# version of PostgreSQL, which the binaries in PG_BIN cannot start.
check_pg_data_version() {
    local name=$1 data_dir=$2 data_version
    data_version=$(<"$data_dir/PG_VERSION")
    if [[ $data_version != "$(pg_binary_major_version)" ]]; then
        die "$name data directory $data_dir was created by PostgreSQL $data_version, but the binaries in $PG_BIN are version $(pg_binary_major_version). Stop the services and delete $SERVICES_DIR to recreate it."
    fi
}

# Writes the server settings and client authentication rules of one cluster.
# The script rewrites both files before every start, so edits to them are lost.
write_pg_config() {
    local data_dir=$1 port=$2
    as_postgres tee "$data_dir/opsbuffer.conf" >/dev/null <<EOF
# Written by scripts/services.sh before each start, so edits here are lost.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$PG_SOCKET_DIR'
shared_buffers = 128MB
wal_level = replica
max_wal_senders = 10
# WAL kept for a replica that was stopped or disconnected, because no replication slot is used.
wal_keep_size = 256MB
# Used only while the server runs as a standby.
hot_standby = on
hot_standby_feedback = on
wal_retrieve_retry_interval = 1s
EOF
    if ! as_postgres grep -q "^include_if_exists = 'opsbuffer.conf'" "$data_dir/postgresql.conf"; then
        printf "\ninclude_if_exists = 'opsbuffer.conf'\n" | as_postgres tee -a "$data_dir/postgresql.conf" >/dev/null
    fi

    as_postgres tee "$data_dir/pg_hba.conf" >/dev/null <<'EOF'
# Written by scripts/services.sh before each start, so edits here are lost.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  trust
host    replication  all   127.0.0.1/32  trust
EOF
}

# Starts one cluster unless it is running, then waits until it accepts connections.
start_pg() {
    local name=$1 data_dir=$2 port=$3 log_file=$4
    if pg_is_running "$data_dir"; then
        log "$name: already running on port $port"
    else
        check_pg_data_version "$name" "$data_dir"
        write_pg_config "$data_dir" "$port"
        log "$name: starting on port $port (log $log_file)"
        # 9>&- keeps the server from inheriting the lock held by this script.
        if ! as_postgres "$PG_BIN/pg_ctl" start -s -D "$data_dir" -l "$log_file" -w -t "$WAIT_SECONDS" 9>&-; then
            print_log_tail "$log_file"
            die "$name PostgreSQL server failed to start on port $port. See $log_file."
        fi
    fi
    wait_until "$name PostgreSQL server to accept connections on port $port" "$log_file" \
        pg_accepts_connections "$port"
}

stop_pg() {
    local name=$1 data_dir=$2
    if ! pg_is_running "$data_dir"; then
        log "$name: not running"
        return
    fi
    log "$name: stopping"
    as_postgres "$PG_BIN/pg_ctl" stop -s -D "$data_dir" -m fast -w -t "$WAIT_SECONDS"
}

init_main() {
    local staging=$MAIN_DATA.new
    log "main: creating data directory $MAIN_DATA"
    # initdb runs in a staging folder so that an interrupted run leaves no
    # half-initialised data directory behind.
    as_postgres rm -rf "$staging"
    as_postgres "$PG_BIN/initdb" -D "$staging" -U postgres --auth=trust --encoding=UTF8 --no-locale >/dev/null
    as_postgres mv "$staging" "$MAIN_DATA"
}

# Creates the roles and the database of the application when they are missing.
create_roles_and_database() {
    log "main: creating roles opsbuffer and replicator and database opsbuffer if missing"
    psql_admin "$MAIN_PORT" postgres <<'SQL'
SELECT 'CREATE ROLE opsbuffer LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'opsbuffer')
\gexec
SELECT 'CREATE ROLE replicator REPLICATION LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator')
\gexec
SELECT 'CREATE DATABASE opsbuffer OWNER opsbuffer'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'opsbuffer')
\gexec
SQL
}

start_main() {
    pg_is_initialised "$MAIN_DATA" || init_main
    start_pg main "$MAIN_DATA" "$MAIN_PORT" "$MAIN_LOG"
}

pg_system_identifier() {
    local data_dir=$1
    as_postgres env LC_ALL=C "$PG_BIN/pg_controldata" -D "$data_dir" |
        awk -F: '/^Database system identifier/ { gsub(/ /, "", $2); print $2 }'
}

# Prints why the replica data directory must be rebuilt from main, or nothing
# when it can be used as it is.
replica_rebuild_reason() {
    if ! pg_is_initialised "$REPLICA_DATA"; then
        echo "it does not exist"
    elif [[ $(<"$REPLICA_DATA/PG_VERSION") != "$(pg_binary_major_version)" ]]; then
        echo "it was created by PostgreSQL $(<"$REPLICA_DATA/PG_VERSION")"
    elif ! [[ -f $REPLICA_DATA/standby.signal ]]; then
        echo "it has no standby.signal, so it is no longer a standby"
    elif [[ $(pg_system_identifier "$REPLICA_DATA") != "$(pg_system_identifier "$MAIN_DATA")" ]]; then
        echo "its system identifier differs from main, so main was re-initialised"
    elif ! grep -Eq "port=$MAIN_PORT([^0-9]|\$)" "$REPLICA_DATA/postgresql.auto.conf"; then
        echo "its primary_conninfo does not point at main port $MAIN_PORT"
    fi
}

# Copies main into a new replica data directory with pg_basebackup, which also
# writes standby.signal and primary_conninfo (-R).
build_replica() {
    local staging=$REPLICA_DATA.new
    log "replica: copying main with pg_basebackup into $REPLICA_DATA"
    as_postgres rm -rf "$staging"
    as_postgres "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$MAIN_PORT" -U replicator -w \
        -D "$staging" -R -X stream -c fast
    as_postgres rm -rf "$REPLICA_DATA"
    as_postgres mv "$staging" "$REPLICA_DATA"
}

replica_is_streaming() {
    local status
    status=$(psql_admin "$LOCAL_PORT" postgres -c "SELECT status FROM pg_stat_wal_receiver" 2>/dev/null) || return 1
    [[ $status == streaming ]]
}

start_replica() {
    local reason
    reason=$(replica_rebuild_reason)
    if [[ -n $reason ]]; then
        if pg_is_initialised "$REPLICA_DATA"; then
            log "replica: rebuilding because $reason"
            stop_pg replica "$REPLICA_DATA"
        fi
        build_replica
    fi
    start_pg replica "$REPLICA_DATA" "$LOCAL_PORT" "$REPLICA_LOG"
    log "replica: waiting for streaming replication from main"
    wait_until "the replica to stream WAL from main" "$REPLICA_LOG" replica_is_streaming
}

# Pauses or resumes WAL replay on the replica and waits until the replica
# reports the expected pause state.
set_replay() {
    local action=$1 sql_function expected_state
    case $action in
        pause) sql_function=pg_wal_replay_pause expected_state=paused ;;
        resume) sql_function=pg_wal_replay_resume expected_state="not paused" ;;
    esac
    require_pg_bin_dir
    pg_accepts_connections "$LOCAL_PORT" || die "replica is not accepting connections on port $LOCAL_PORT. Run '$0 start'."
    psql_admin "$LOCAL_PORT" postgres -c "SELECT $sql_function()" >/dev/null
    wait_until "replay on the replica to be $expected_state" "$REPLICA_LOG" \
        replay_state_is "$expected_state"
    log "replica: replay $expected_state at LSN $(psql_admin "$LOCAL_PORT" postgres -c "SELECT pg_last_wal_replay_lsn()")"
}

replay_state_is() {
    local expected_state=$1
    [[ $(psql_admin "$LOCAL_PORT" postgres -c "SELECT pg_get_wal_replay_pause_state()") == "$expected_state" ]]
}

# ---------------------------------------------------------------------------
# Redis

# Prints the process id of the Redis server started from this data folder.
# Returns 1 if it is not running.
redis_pid() {
    local pid
    [[ -f $REDIS_PID_FILE ]] || return 1
    pid=$(<"$REDIS_PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == redis-server* ]] || return 1
    echo "$pid"
}

redis_responds() {
    [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

port_accepts_tcp() {
    local port=$1
    (: <>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

redis_is_running() {
    redis_pid >/dev/null && redis_responds
}

start_redis() {
    if redis_pid >/dev/null; then
        log "redis: already running on port $REDIS_PORT"
    else
        if redis_responds; then
            die "port $REDIS_PORT is used by a Redis server that this script did not start. Set OPSBUFFER_REDIS_PORT to a free port."
        fi
        # Redis would exit at once on a used port, but the daemonized process has
        # no known pid to watch, so the wait below would last until its timeout.
        if port_accepts_tcp "$REDIS_PORT"; then
            die "port $REDIS_PORT is used by another process. Set OPSBUFFER_REDIS_PORT to a free port."
        fi
        log "redis: starting on port $REDIS_PORT (log $REDIS_LOG)"
        # 9>&- keeps the server from inheriting the lock held by this script.
        redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
            --dir "$REDIS_DIR" --appendonly yes --appendfsync always --save "" \
            --daemonize yes --pidfile "$REDIS_PID_FILE" --logfile "$REDIS_LOG" 9>&-
    fi
    wait_until "Redis to respond to PING on port $REDIS_PORT" "$REDIS_LOG" redis_is_running
}

stop_redis() {
    local pid
    if ! pid=$(redis_pid); then
        log "redis: not running"
        return
    fi
    log "redis: stopping"
    # On SIGTERM Redis fsyncs the append-only file and exits, as
    # https://redis.io/docs/reference/signals describes.
    kill -TERM "$pid"
    wait_until "Redis process $pid to exit" "$REDIS_LOG" process_has_exited "$pid"
}

process_has_exited() {
    ! kill -0 "$1" 2>/dev/null
}

# ---------------------------------------------------------------------------
# Commands

print_urls() {
    # LOCAL is the replica, which the service reads from.
    cat <<EOF
MAIN_DB_URL=postgres://opsbuffer@127.0.0.1:$MAIN_PORT/opsbuffer
LOCAL_DB_URL=postgres://opsbuffer@127.0.0.1:$LOCAL_PORT/opsbuffer
REDIS_URL=redis://127.0.0.1:$REDIS_PORT
MAIN_ADMIN_URL=postgres://postgres@127.0.0.1:$MAIN_PORT/opsbuffer
LOCAL_ADMIN_URL=postgres://postgres@127.0.0.1:$LOCAL_PORT/opsbuffer
EOF
}

command_start() {
    install_missing_packages
    require_pg_bin_dir
    prepare_folders
    lock_services_dir
    start_main
    create_roles_and_database
    start_replica
    start_redis
    print_urls
}

command_stop() {
    lock_services_dir
    # Without PostgreSQL binaries no PostgreSQL server of this script can run.
    if find_pg_bin_dir; then
        stop_pg replica "$REPLICA_DATA"
        stop_pg main "$MAIN_DATA"
    fi
    stop_redis
}

command_stop_main() {
    require_pg_bin_dir
    lock_services_dir
    stop_pg main "$MAIN_DATA"
}

command_start_main() {
    require_pg_bin_dir
    pg_is_initialised "$MAIN_DATA" || die "main data directory $MAIN_DATA not found. Run '$0 start' first."
    prepare_folders
    lock_services_dir
    start_pg main "$MAIN_DATA" "$MAIN_PORT" "$MAIN_LOG"
}

command_restart_redis() {
    command -v redis-server >/dev/null || die "redis-server not found. Run '$0 start' to install it."
    mkdir -p "$REDIS_DIR"
    lock_services_dir
    stop_redis
    start_redis
}

# Prints one line per service and returns 3 unless all three run.
command_status() {
    local all_running=true pid replica_state

    if find_pg_bin_dir && pg_is_running "$MAIN_DATA"; then
        echo "main: running on port $MAIN_PORT"
    else
        echo "main: stopped (port $MAIN_PORT)"
        all_running=false
    fi

    if [[ -n $PG_BIN ]] && pg_is_running "$REPLICA_DATA"; then
        if replica_state=$(psql_admin "$LOCAL_PORT" postgres -F ', ' -c \
            "SELECT 'in recovery: ' || pg_is_in_recovery(),
                    'replay LSN: ' || coalesce(pg_last_wal_replay_lsn()::text, 'none'),
                    'replay: ' || pg_get_wal_replay_pause_state()" 2>/dev/null); then
            echo "replica: running on port $LOCAL_PORT, $replica_state"
        else
            echo "replica: running on port $LOCAL_PORT, not accepting connections yet"
        fi
    else
        echo "replica: stopped (port $LOCAL_PORT)"
        all_running=false
    fi

    if pid=$(redis_pid) && redis_responds; then
        echo "redis: running on port $REDIS_PORT (pid $pid)"
    else
        echo "redis: stopped (port $REDIS_PORT)"
        all_running=false
    fi

    [[ $all_running == true ]] || return 3
}

main() {
    if (($# != 1)); then
        usage >&2
        exit 2
    fi
    validate_settings
    case $1 in
        start) command_start ;;
        stop) command_stop ;;
        status) command_status ;;
        pause-replay) set_replay pause ;;
        resume-replay) set_replay resume ;;
        stop-main) command_stop_main ;;
        start-main) command_start_main ;;
        restart-redis) command_restart_redis ;;
        env) print_urls ;;
        -h | --help | help) usage ;;
        *)
            printf 'services: unknown command %s\n' "$1" >&2
            usage >&2
            exit 2
            ;;
    esac
}

main "$@"
