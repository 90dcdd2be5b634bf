#!/usr/bin/env bash
# Replays an observing night against opsbuffer and checks the result:
# starts the services if they are not running, builds the release binary,
# applies the migrations, picks the input files and runs `opsbuffer demo`.
# Exits with the demo's exit code, 0 only when every check passed.
#
# Usage: scripts/demo.sh [extra arguments for `opsbuffer demo`]
#
# Environment variables:
#   OPSBUFFER_DEMO_DATA  folder with the real input files, relative to the
#                        repository root or absolute (default ../shared/data/real).
#                        When it does not exist, a synthetic example set is
#                        generated into target/demo-example and used instead.
#   CARGO_TARGET_DIR     cargo's target folder (default target)
# The service ports follow scripts/services.sh (OPSBUFFER_MAIN_PORT and so on).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SERVICES=scripts/services.sh
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BINARY=$TARGET_DIR/release/opsbuffer
DATA_DIR=${OPSBUFFER_DEMO_DATA:-../shared/data/real}
EXAMPLE_DIR=$TARGET_DIR/demo-example

log() {
    printf 'demo: %s\n' "$*"
}

die() {
    printf 'demo: error: %s\n' "$*" >&2
    exit 1
}

started_services=false

stop_started_services() {
    local status=$?
    if [[ $started_services == true ]]; then
        log "stopping the services this script started"
        "$SERVICES" stop || log "warning: scripts/services.sh stop failed"
    fi
    exit "$status"
}
trap stop_started_services EXIT

# 1. Services.
if "$SERVICES" status >/dev/null 2>&1; then
    log "services already running; they stay running afterwards"
else
    log "starting the services"
    started_services=true
    "$SERVICES" start
fi

# Connection URLs for the demo and the migration, as services.sh prints them.
while IFS='=' read -r name value; do
    case $name in
        MAIN_DB_URL | LOCAL_DB_URL | REDIS_URL | MAIN_ADMIN_URL | LOCAL_ADMIN_URL)
            export "$name=$value"
            ;;
    esac
done < <("$SERVICES" env)

# 2. Build and migrate.
log "building the release binary"
cargo build --release -p opsbuffer
log "applying migrations to main"
NO_COLOR=1 "$BINARY" migrate

# 3. Input.
if [[ -d $DATA_DIR ]]; then
    SCHEDULE=$DATA_DIR/schedule_Jupiter_5deg.txt
    SOURCES=$DATA_DIR/sample_sourcelist.csv
    INSTRUMENT=$DATA_DIR/input.yaml
    PARAMS=$DATA_DIR/params.yaml
    SCAN_PARAMS=$DATA_DIR/pcs_source_scan_kwargs_2cb9a8a.json
    INSTRUMENT_NAME=Prime-Cam
    log "input: the real FYST files in $DATA_DIR"
else
    log "input: $DATA_DIR does not exist, so a SYNTHETIC example set is generated"
    "$BINARY" demo --write-example "$EXAMPLE_DIR"
    SCHEDULE=$EXAMPLE_DIR/schedule.txt
    SOURCES=$EXAMPLE_DIR/sourcelist.csv
    INSTRUMENT=$EXAMPLE_DIR/instrument.yaml
    PARAMS=$EXAMPLE_DIR/params.yaml
    SCAN_PARAMS=$EXAMPLE_DIR/scan_params_keys.json
    # A separate instrument keeps made-up modules away from Prime-Cam.
    INSTRUMENT_NAME=Example-Cam
fi
for file in "$SCHEDULE" "$SOURCES" "$INSTRUMENT" "$PARAMS" "$SCAN_PARAMS"; do
    [[ -f $file ]] || die "missing input file $file"
done

# 4. The demo. Its exit code becomes the script's.
log "running the demo"
demo_status=0
NO_COLOR=1 "$BINARY" demo \
    --schedule "$SCHEDULE" \
    --sources "$SOURCES" \
    --instrument "$INSTRUMENT" \
    --params "$PARAMS" \
    --scan-params "$SCAN_PARAMS" \
    --instrument-name "$INSTRUMENT_NAME" \
    --log-dir "$TARGET_DIR/demo" \
    "$@" || demo_status=$?

if ((demo_status == 0)); then
    log "the demo passed"
else
    log "the demo failed with exit code $demo_status"
fi
# 5. The EXIT trap stops the services if this script started them.
exit "$demo_status"
