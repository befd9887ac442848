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
ctest --test-dir "$BUILD_DIR" --output-on-failure ${CTEST_ARGS:-}
