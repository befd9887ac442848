#!/usr/bin/env bash
# The layers of src/ (README "Layout"), kept by two independent checks:
#  1. sources: every `#include "x/..."` under src/<part>/ names the part itself or a part
#     below it in the table here (which mirrors the README's layer order), every part
#     of src/ is in the table and has a row in the README's layout table;
#  2. build: the include flags CMake gives a lower part (build/compile_commands.json)
#     cannot find an upper part's header: a tiny translation unit with an upward
#     include must fail to compile (and a sideways/downward one, the control, compile).
# Usage: tests/tools/layers.sh [build dir]   (ctest: lint.layers)
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../integration/lib/common.sh"
BUILD_DIR=${1:-${NYDUS_BUILD_DIR:-$NYDUS_SOURCE_DIR/build}}
SRC=$NYDUS_SOURCE_DIR/src

# part -> the parts its sources may include (besides itself). Order, bottom up:
#   common <- format <- storage <- runtime <- {fuse, fscache, fanotify} <- daemon <- tools
#   builder <- format; convert <- builder, storage; api <- common; snapshotter <- api, storage.
# The modes and the daemon implement api's DaemonApi, so they sit above api too.
declare -A ALLOWED=(
  [common]=""
  [format]="common"
  [storage]="format common"
  [runtime]="storage format common"
  [fuse]="runtime storage format common"
  [fscache]="runtime storage format common api"
  [fanotify]="runtime storage format common api"
  [daemon]="fuse runtime storage format common api"
  [builder]="format common"
  [convert]="builder storage format common"
  [api]="common"
  [snapshotter]="api storage format common"
  [tools]="daemon fuse fscache fanotify runtime storage format common builder convert api snapshotter"
)

check_sources() {
  local bad=0 part dir file inc target
  for dir in "$SRC"/*/; do
    part=$(basename "$dir")
    if [ -z "${ALLOWED[$part]+set}" ]; then
      echo "src/$part/: a part missing from the table in $0 (and from the README's layout table?)"
      bad=1; continue
    fi
    grep -q "^| \`src/$part/" "$NYDUS_SOURCE_DIR/README.md" ||
      { echo "README.md: no row for src/$part/ in the layout table"; bad=1; }
    while IFS=: read -r file inc; do
      target=${inc%%/*}
      [ "$target" = "$part" ] && continue
      [ -d "$SRC/$target" ] || continue  # not a part (e.g. a generated proto path)
      if ! [[ " ${ALLOWED[$part]} " == *" $target "* ]]; then
        echo "${file#"$NYDUS_SOURCE_DIR"/}: includes \"$inc\": $part may include only: ${ALLOWED[$part]:-(nothing)}"
        bad=1
      fi
    done < <(grep -rHoE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[A-Za-z0-9_.]+/[^"]+"' "$dir" |
             sed -E 's/:[[:space:]]*#[[:space:]]*include[[:space:]]*"/:/; s/"$//')
  done
  # The table must not allow what the README's order does not: spot-check the edges the
  # issue is about (a mode or the runtime reaching up).
  local p
  for p in common format storage runtime fuse fscache fanotify; do
    [[ " ${ALLOWED[$p]} " == *" daemon "* ]] && { echo "table: $p may not include daemon"; bad=1; }
  done
  for p in common format storage runtime fscache fanotify; do
    [[ " ${ALLOWED[$p]} " == *" fuse "* ]] && { echo "table: $p may not include fuse"; bad=1; }
  done
  return "$bad"
}

CC_JSON=$BUILD_DIR/compile_commands.json

# flags_of PART: the compile command of one of PART's sources, as a bash array in FLAGS
# (compiler first), without -o/-c/-MF/... and the source file.
flags_of() {
  local part=$1
  mapfile -t FLAGS < <("$PY" - "$CC_JSON" "$SRC/$part/" <<'EOF'
import json, shlex, sys
entries = json.load(open(sys.argv[1]))
prefix = sys.argv[2]
for e in entries:
    if e["file"].startswith(prefix) and e["file"].endswith(".cpp"):
        args = e.get("arguments") or shlex.split(e["command"])
        out, skip = [], False
        for a in args:
            if skip:
                skip = False; continue
            if a in ("-o", "-MF", "-MT", "-MQ", "-c"):
                skip = a != "-c"; continue
            if a in ("-MD", "-MMD") or a == e["file"]:
                continue
            out.append(a)
        # Relative -I paths are relative to the entry's directory.
        print(e["directory"]); print("\n".join(out)); break
EOF
  )
  [ "${#FLAGS[@]}" -gt 1 ] || return 1
  CC_DIR=${FLAGS[0]}
  FLAGS=("${FLAGS[@]:1}")
}

# compile PART HEADER: compile `#include "HEADER"` with PART's flags; prints the compiler's output.
compile() {
  local part=$1 header=$2 tu
  tu=$(mktemp --suffix=.cpp)
  printf '#include "%s"\nint layers_probe;\n' "$header" >"$tu"
  (cd "$CC_DIR" && "${FLAGS[@]}" -fsyntax-only "$tu") 2>&1
  local rc=$?
  rm -f "$tu"
  return "$rc"
}

# upward PART HEADER: must fail, because HEADER is not found (not for another reason).
upward() {
  local part=$1 header=$2 out
  flags_of "$part" || { echo "no compile command for src/$part/ in $CC_JSON"; return 1; }
  if out=$(compile "$part" "$header"); then
    echo "src/$part/ compiled #include \"$header\": an upward include is visible"; return 1
  fi
  grep -q "$header: No such file or directory" <<<"$out" ||
    { echo "failed, but not because $header is out of sight:"; echo "$out" | head -20; return 1; }
  echo "src/$part/ cannot see $header (as it should)"
}

# allowed PART HEADER: the control; the same flags compile an include the table allows.
allowed() {
  local part=$1 header=$2 out
  flags_of "$part" || { echo "no compile command for src/$part/ in $CC_JSON"; return 1; }
  out=$(compile "$part" "$header") || { echo "src/$part/ cannot compile #include \"$header\":"; echo "$out" | head -20; return 1; }
}

no_global_src_include() {
  ! grep -E -- "-I *$SRC( |\"|$)|-isystem *$SRC( |\"|$)" "$CC_JSON" | head -3 | grep .
}

step "sources include only their own part and the parts below it" check_sources
[ -f "$CC_JSON" ] || die "$CC_JSON missing (configure with CMake first; CMAKE_EXPORT_COMPILE_COMMANDS is on)"
step "no compile command has src/ itself on its include path" no_global_src_include
step "storage cannot include daemon/daemon.h" upward storage daemon/daemon.h
step "storage cannot include runtime/config.h" upward storage runtime/config.h
step "format cannot include storage/backend.h" upward format storage/backend.h
step "runtime cannot include fuse/rafs_fs.h" upward runtime fuse/rafs_fs.h
step "fscache cannot include daemon/daemon.h" upward fscache daemon/daemon.h
step "fscache cannot include fuse/vfs.h" upward fscache fuse/vfs.h
step "fanotify cannot include daemon/daemon.h" upward fanotify daemon/daemon.h
step "fanotify cannot include fuse/rafs_fs.h" upward fanotify fuse/rafs_fs.h
step "builder cannot include storage/backend.h" upward builder storage/backend.h
step "api cannot include daemon/daemon.h" upward api daemon/daemon.h
step "control: fscache can include runtime/prefetch.h" allowed fscache runtime/prefetch.h
step "control: storage can include format/bootstrap.h" allowed storage format/bootstrap.h
summary
