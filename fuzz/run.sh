#!/usr/bin/env bash
# Build the libFuzzer targets (clang++-16, ASan+UBSan) into build-fuzz/ and run each
# for SECONDS (default 60; or $FUZZ_SECONDS), all targets unless some are named:
#   fuzz/run.sh [seconds] [target...]      targets: fuzz/fuzz_<target>.cpp
# Seeds come from fuzz/corpus/<target>/ and fuzz/regressions/<target>/; the growing
# corpus stays in build-fuzz/corpus/<target>/, crashes go to build-fuzz/artifacts/<target>/.
# FUZZ_JOBS targets run at once (default: number of cores). Exits 1 if any target
# found a crash/leak/timeout (reproduce: build-fuzz/fuzz/fuzz_<target> <artifact>).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${FUZZ_BUILD_DIR:-$ROOT/build-fuzz}
SECONDS_PER=${1:-${FUZZ_SECONDS:-60}}
[ $# -gt 0 ] && shift
if [ $# -gt 0 ]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(cd "$ROOT/fuzz" && ls fuzz_*.cpp | sed 's/^fuzz_//; s/\.cpp$//')
fi
JOBS=${FUZZ_JOBS:-$(nproc)}
CXX=${FUZZ_CXX:-clang++-16}
CC=${FUZZ_CC:-clang-16}

max_len() {
  case $1 in
    bootstrap | bootstrap_v5) echo 65536 ;;
    blob_meta | zran_meta) echo 20000 ;;
    toc | http_request) echo 8192 ;;
    stargz_toc) echo 16384 ;;
    decompress | config_json) echo 4096 ;;
    tar_header | www_authenticate) echo 1024 ;;
    content_range) echo 256 ;;
    *) echo 4096 ;;
  esac
}

if [ ! -f "$B/build.ninja" ]; then
  cmake -S "$ROOT" -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNYDUS_FUZZ=ON \
    -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_C_COMPILER="$CC" >/dev/null
fi
ninja -C "$B" $(printf 'fuzz_%s ' "${TARGETS[@]}") | grep -v '^\[' || true
for t in "${TARGETS[@]}"; do [ -x "$B/fuzz/fuzz_$t" ] || { echo "run.sh: fuzz_$t did not build" >&2; exit 2; }; done

run_one() {
  local t=$1 work=$B/corpus/$1 art=$B/artifacts/$1/ log=$B/logs/$1.log seeds=()
  mkdir -p "$work" "$art" "$B/logs"
  for d in "$ROOT/fuzz/corpus/$t" "$ROOT/fuzz/regressions/$t"; do [ -d "$d" ] && seeds+=("$d"); done
  local rc=0
  "$B/fuzz/fuzz_$t" "$work" "${seeds[@]}" -max_total_time="$SECONDS_PER" -max_len="$(max_len "$t")" \
    -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix="$art" >"$log" 2>&1 || rc=$?
  local runs
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  if [ "$rc" -eq 0 ]; then
    printf '%-18s %10s execs  ok\n' "$t" "${runs:-?}"
  else
    local what
    what=$(grep -m1 -E '^==[0-9]+==ERROR|runtime error|ERROR: libFuzzer' "$log" || echo "exit $rc")
    printf '%-18s %10s execs  FOUND: %s (log %s, input %s)\n' "$t" "${runs:-?}" "$what" "$log" \
      "$(ls -t "$art" 2>/dev/null | head -1)"
    return 1
  fi
}
export -f run_one max_len
export B ROOT SECONDS_PER
echo "fuzzing ${#TARGETS[@]} targets for ${SECONDS_PER}s each, $JOBS at a time"
if printf '%s\n' "${TARGETS[@]}" | xargs -P "$JOBS" -I{} bash -c 'run_one "$@"' _ {}; then
  echo "fuzz: no findings"
else
  echo "fuzz: FINDINGS (see above)"; exit 1
fi
