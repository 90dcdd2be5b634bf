#!/usr/bin/env bash
# Measures opsbuffer with the load generator and prints the results as
# Markdown tables. It builds the release binary and opsbuffer-load, starts
# the services when they are not running and records the machine. Then it
# runs every scenario at full size (several minutes), or with --smoke at a
# size that takes a few seconds per scenario.
#
# Usage: scripts/bench.sh [SCENARIO] [--smoke] [--binary PATH] [--label TEXT] [--json FILE] [other opsbuffer-load options]
#   SCENARIO  all (default), writes, search, drain, eviction or memory
#   --binary  the opsbuffer executable to measure (default: target/release/opsbuffer, built here)
# `target/release/opsbuffer-load --help` lists every option.
#
# The eviction scenario pauses replay on the shared replica, so it waits
# while `cargo test`, scripts/test.sh or the demo runs. Measure only when no
# build or test runs on the machine; the output records the load average.
#
# Environment variables:
#   CARGO_TARGET_DIR  cargo's target folder (default target)
# The service ports follow scripts/services.sh (OPSBUFFER_MAIN_PORT and so on).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

SERVICES=scripts/services.sh
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
LOAD=$TARGET_DIR/release/opsbuffer-load

log() {
    printf 'bench: %s\n' "$*" >&2
}

die() {
    printf 'bench: error: %s\n' "$*" >&2
    exit 1
}

scenario=
binary=
args=()
while (($# > 0)); do
    case $1 in
        all | writes | search | drain | eviction | memory)
            [[ -z $scenario ]] || die "more than one scenario given: $scenario and $1"
            scenario=$1
            ;;
        --binary)
            (($# >= 2)) || die "--binary needs a path"
            binary=$2
            shift
            ;;
        --binary=*)
            binary=${1#--binary=}
            ;;
        -h | --help)
            sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            args+=("$1")
            ;;
    esac
    shift
done
scenario=${scenario:-all}

# 1. Build.
if [[ -z $binary ]]; then
    log "building the release binary and the load generator"
    cargo build --release -p opsbuffer -p opsbuffer-bench
    binary=$TARGET_DIR/release/opsbuffer
else
    log "building the load generator"
    cargo build --release -p opsbuffer-bench
fi
[[ -x $binary ]] || die "$binary is not an executable file"

# 2. Services.
if ! "$SERVICES" status >/dev/null 2>&1; then
    log "starting the services"
    "$SERVICES" start >/dev/null
fi
while IFS='=' read -r name value; do
    case $name in
        MAIN_DB_URL | LOCAL_DB_URL | REDIS_URL | MAIN_ADMIN_URL | LOCAL_ADMIN_URL)
            export "$name=$value"
            ;;
    esac
done < <("$SERVICES" env)

# 3. The machine, and anything heavy that runs beside the measurement.
cpu_model=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
memory_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
busy=$(pgrep -a -x 'cargo|rustc' | cut -c1-100 | paste -sd ';' - || true)
echo "# opsbuffer benchmark: $scenario${args[*]:+ ${args[*]}}"
echo
echo "- machine: $(nproc) cores (${cpu_model:-unknown CPU}), $((memory_kib / 1024)) MiB memory, Linux $(uname -r)"
echo "- load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- builds or tests running beside it: ${busy:-none}"
echo "- command: scripts/bench.sh $scenario --binary $binary${args[*]:+ ${args[*]}}"
echo

# 4. The measurement.
status=0
"$LOAD" "$scenario" --binary "$binary" "${args[@]}" || status=$?
if ((status != 0)); then
    log "opsbuffer-load failed with exit code $status"
    if "$SERVICES" status 2>/dev/null | grep -q 'replay: paused'; then
        log "warning: replay on the replica is paused; run $SERVICES resume-replay once no test needs it paused"
    fi
fi
exit "$status"
