#!/usr/bin/env bash
# Build (via scripts/setup.sh) and run every test: unit (GoogleTest) and integration
# (tests/integration/*.sh; the kernel-mount ones need root and are skipped otherwise).
#   SKIP_SETUP=1 skips setup.sh (deps + build).
#   CTEST_ARGS="-L unit" (or -R pattern, -j2, ...) are passed to ctest.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
export BUILD_DIR

[ "${SKIP_SETUP:-0}" = 1 ] || bash "$ROOT/scripts/setup.sh"
# shellcheck disable=SC2086  # CTEST_ARGS is a list of options
# Unit tests two at a time (or $(nproc)); the integration and compat scripts are RUN_SERIAL
# (tests/CMakeLists.txt): mounts, kernel parameters and timings that must not share the machine.
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "${CTEST_JOBS:-$(nproc)}" ${CTEST_ARGS:-}
