#!/usr/bin/env bash
# Sanitizer pass (called by .ci/run after the main tests). Stages, in order, as
# listed in $STAGES (default "asan tsan fuzz"):
#   asan  ASan+UBSan (g++, -DNYDUS_SANITIZE=ON) build of what `ctest -L unit` needs
#         (the <part>_tests binaries, the fuzz replay drivers, nydusctl) into build-asan/,
#         then `ctest -L unit` there;
#   tsan  TSan build of the concurrent parts only (storage_tests: the blob cache, its
#         read-ahead and persist threads; api_tests; fuse_tests: the open-file cache;
#         snapshotter_tests: daemon starts outside the snapshotter's lock; builder_tests'
#         ZranBuild.*: targz-ref's tar scan and inflate scan on two threads) into
#         build-tsan/, running those binaries;
#   fuzz  a short libFuzzer pass, FUZZ_SECONDS per target (default 30), via
#         fuzz/run.sh into build-fuzz/ (skipped with a note when clang++-16 is missing).
# Build dirs: ASAN_BUILD_DIR, TSAN_BUILD_DIR, FUZZ_BUILD_DIR.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ASAN_DIR=${ASAN_BUILD_DIR:-$ROOT/build-asan}
TSAN_DIR=${TSAN_BUILD_DIR:-$ROOT/build-tsan}
STAGES=${STAGES:-asan tsan fuzz}
export FUZZ_SECONDS=${FUZZ_SECONDS:-30}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$ROOT/scripts/lsan.supp}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}

t0=$(date +%s)
stamp() { echo "sanitizers: $1 ($(($(date +%s) - t0)) s so far)"; }
want() { [[ " $STAGES " == *" $1 "* ]]; }

# What `ctest -L unit` runs: every <part>_tests binary, the fuzz replay drivers, and
# nydusctl and nydusd (the API and fscache process tests run them).
unit_targets() {
  ninja -C "$1" -t targets all 2>/dev/null | cut -d: -f1 |
    grep -xE '[a-z0-9_]+_tests|fuzz_[a-z0-9_]+_replay|nydusctl|nydusd' | sort -u
}

if want asan; then
  stamp "ASan+UBSan build in $ASAN_DIR"
  # -O1 -g1: what sanitizer builds usually use; -O2 -g made this build twice as slow.
  cmake -S "$ROOT" -B "$ASAN_DIR" -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1 -g1" \
    -DCMAKE_C_FLAGS="-O1 -g1" -DNYDUS_SANITIZE=ON >/dev/null
  mapfile -t targets < <(unit_targets "$ASAN_DIR")
  ninja -C "$ASAN_DIR" "${targets[@]}"
  stamp "ASan+UBSan unit tests"
  ctest --test-dir "$ASAN_DIR" -L unit --output-on-failure -j "$(nproc)"
  # The integration scripts that attack the daemon, with sanitized binaries:
  # malicious images, the FUSE mount end to end, upgrade and kill -9 failover.
  ninja -C "$ASAN_DIR" nydus-image nydusd nydusctl hostile-image tree-manifest
  stamp "ASan+UBSan integration: hostile_images, fuse_mount, fuse_upgrade"
  for t in hostile_images fuse_mount fuse_upgrade; do
    NYDUS_BIN_DIR="$ASAN_DIR/bin" HOSTILE_RSS_LIMIT_MB=1024 SMALL=1 UPGRADES=2 KILLS=2 \
      bash "$ROOT/tests/integration/$t.sh" || { echo "sanitizers: ASan $t failed" >&2; exit 1; }
  done
fi

if want tsan; then
  stamp "TSan build in $TSAN_DIR"
  cmake -S "$ROOT" -B "$TSAN_DIR" -G Ninja -DCMAKE_BUILD_TYPE=None \
    -DCMAKE_CXX_FLAGS="-O1 -g1 -fsanitize=thread -fno-omit-frame-pointer" \
    -DCMAKE_C_FLAGS="-O1 -g1 -fsanitize=thread -fno-omit-frame-pointer" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" >/dev/null
  # nydusctl too: api_tests runs it against the server (a missing one fails in CI).
  ninja -C "$TSAN_DIR" storage_tests api_tests fuse_tests snapshotter_tests builder_tests nydusctl
  stamp "TSan storage + api + fuse + snapshotter + zran build tests"
  # The binaries directly: ctest would also list the parts not built here.
  for t in storage_tests api_tests fuse_tests snapshotter_tests; do
    (cd "$TSAN_DIR/tests" && "./$t" --gtest_brief=1) || { echo "sanitizers: TSan $t failed" >&2; exit 1; }
  done
  (cd "$TSAN_DIR/tests" && ./builder_tests --gtest_brief=1 --gtest_filter='ZranBuild.*') ||
    { echo "sanitizers: TSan builder_tests (ZranBuild) failed" >&2; exit 1; }
fi

if want fuzz && [ "$FUZZ_SECONDS" != 0 ]; then
  if command -v clang++-16 >/dev/null; then
    stamp "fuzzing ${FUZZ_SECONDS}s per target"
    bash "$ROOT/fuzz/run.sh" "$FUZZ_SECONDS"
  else
    echo "sanitizers: clang++-16 not installed (scripts/setup.sh installs it); no fuzz pass" >&2
  fi
fi
stamp "done ($STAGES)"
