#!/usr/bin/env bash
# Runs the test suite against the project's own PostgreSQL main, streaming
# replica and Redis, starting them first when they are not running.
# OPSBUFFER_HEAVY_TESTS=1 also runs the long fault and randomized scenarios.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! bash scripts/services.sh status >/dev/null 2>&1; then
    echo "test: starting the services" >&2
    bash scripts/services.sh start >/dev/null
fi
eval "$(bash scripts/services.sh env | sed 's/^/export /')"

features=()
if [ "${OPSBUFFER_HEAVY_TESTS:-0}" = "1" ]; then
    features=(--features opsbuffer-tests/heavy)
fi

echo "test: building" >&2
cargo build --workspace --all-targets "${features[@]}"
echo "test: running the test suite (heavy scenarios: ${OPSBUFFER_HEAVY_TESTS:-0})" >&2
cargo test --workspace "${features[@]}" -- --test-threads="${OPSBUFFER_TEST_THREADS:-4}"
