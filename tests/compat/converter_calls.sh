#!/usr/bin/env bash
# nydus-image as containerd/nydus-snapshotter v0.15's pkg/converter runs it. The
# command lines are the ones pkg/converter/tool/builder.go builds, flag for flag:
#   probe   `create -h` (feature.go: "--type"+"tar-rafs" -> tar2rafs)
#   Pack    create --log-level warn --prefetch-policy fs --blob FIFO --whiteout-spec
#           none --fs-version 6 --type tar-rafs --blob-inline-meta --features
#           blob-toc [--chunk-dict bootstrap=P] [--compressor C] SOURCE-FIFO,
#           prefetch list "/" on stdin; and the directory form (--source-type
#           directory --inline-bootstrap)
#   Merge   merge --log-level warn --prefetch-policy fs --output-json J --bootstrap T
#           <layer bootstraps named by blob digest> [--blob-digests ..
#           --blob-toc-digests .. --blob-sizes ..]
#   Unpack  unpack --log-level warn --bootstrap B --output FIFO --blob DATA
# and nydusify check's `check --log-level warn --output-json J --bootstrap B` and
# `inspect B --request blobs` (read with CombinedOutput). Oracles: the layer tars
# (python tarfile), sha256sum/stat of the blobs, converter_blob.py (an
# independent reader of the blob's ToC / tar chain), and strict decoders of the
# Go structs the callers decode (outputJSON, nydusify's output and BlobInfo).
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=../integration/lib/common.sh
source "$(dirname "$0")/../integration/lib/common.sh"
need_nydus_image
command -v zstd >/dev/null || die "zstd not installed (scripts/setup.sh installs it)"
COMPAT_LIB=$(cd "$(dirname "$0")/lib" && pwd)
NI=$NYDUS_IMAGE
WORK=$(mktemp -d "${NYDUS_TEST_TMP:-/var/tmp}/nydus-compat-conv.XXXXXX") || die "mktemp"
LOG_DIR=$WORK/logs
mkdir -p "$LOG_DIR"
trap 'rm -rf "$WORK"' EXIT
BLOB=$COMPAT_LIB/converter_blob.py
TARS=$COMPAT_LIB/converter_tars.py

# ---- layers (made with tar) ----
mk_layers() {
  local r=$WORK/src
  mkdir -p "$r/l1/etc" "$r/l1/usr/bin" "$r/l1/opq" "$r/l2/etc" "$r/l2/opq" "$r/l3/empty"
  echo hello >"$r/l1/etc/hello"
  head -c 3000000 /dev/urandom >"$r/l1/usr/bin/big"
  printf 'x%.0s' $(seq 1 5000) >"$r/l1/usr/bin/xs"
  ln -s ../../etc/hello "$r/l1/usr/bin/link"
  echo gone >"$r/l1/etc/gone"
  echo old >"$r/l1/opq/old"
  chmod 4755 "$r/l1/usr/bin/xs"
  : >"$r/l2/etc/.wh.gone"
  : >"$r/l2/opq/.wh..wh..opq"
  echo new >"$r/l2/opq/new"
  echo two >"$r/l2/etc/two"
  tar --numeric-owner -C "$r/l1" -cf "$WORK/l1.tar" .
  tar --numeric-owner -C "$r/l2" -cf "$WORK/l2.tar" .
  tar --numeric-owner -C "$r/l3" -cf "$WORK/l3.tar" .
}
step "make layer tars" mk_layers || die "layers"

# ---- feature probe ----
probe() {
  "$NI" create -h >"$WORK/help.txt" || return 1
  grep -q -- "--type" "$WORK/help.txt" && grep -q "tar-rafs" "$WORK/help.txt" || { echo "tar2rafs not detected"; return 1; }
  # The converter passes --batch-size / --encrypt only when -h advertises them.
  grep -q -- "--batch-size" "$WORK/help.txt" && grep -q -- "--encrypt" "$WORK/help.txt"
}
step "create -h: the converter detects tar2rafs, batch-size and encrypt" probe

# pack NAME SOURCE [extra args...]: the converter's packFromTar with FIFOs.
pack() {
  local name=$1 src=$2; shift 2
  local d=$WORK/pack-$name
  mkdir -p "$d" && rm -f "$d/blob.rafs" "$d/blob.targz" && mkfifo "$d/blob.rafs" "$d/blob.targz" || return 1
  cat "$src" >"$d/blob.targz" &
  local feeder=$!
  cat "$d/blob.rafs" >"$WORK/$name.blob" &
  local reader=$!
  printf / | "$NI" create --log-level warn --prefetch-policy fs --blob "$d/blob.rafs" --whiteout-spec none \
    --fs-version 6 --type tar-rafs --blob-inline-meta --features blob-toc "$@" "$d/blob.targz" 2>"$d/stderr"
  local rc=$?
  wait "$feeder" "$reader"
  cat "$d/stderr"
  [ "$rc" -eq 0 ] || return "$rc"
  # --log-level warn: no info lines on stderr (the converter logs them).
  ! grep -q INFO "$d/stderr"
}
# as convert_unix.go's Merge: image.boot of each layer into <digest hex>.
extract_layer() {
  local name=$1 hex
  hex=$(sha256sum "$WORK/$name.blob" | cut -d' ' -f1)
  echo "$hex" >"$WORK/$name.digest"
  mkdir -p "$WORK/merge"
  "$PY" "$BLOB" extract "$WORK/$name.blob" image.boot "$WORK/merge/$hex" || return 1
  local rc=0
  "$PY" "$BLOB" extract "$WORK/$name.blob" image.blob "$WORK/$name.data" || rc=$?
  [ "$rc" -eq 0 ] || { [ "$rc" -eq 3 ] && : >"$WORK/$name.data"; } || return 1
  mkdir -p "$WORK/blobs" && cp "$WORK/$name.blob" "$WORK/blobs/$hex"
}
for l in l1 l2 l3; do
  step "Pack $l (tar-rafs, FIFOs, stdin '/')" pack "$l" "$WORK/$l.tar" && step "read $l as the converter does" extract_layer "$l"
done
step "Pack l1 with --compressor lz4_block" pack l1lz4 "$WORK/l1.tar" --compressor lz4_block &&
  step "read l1lz4" extract_layer l1lz4
# The chunk dict: a separate image's bootstrap (real blob ids), here of l1's tree.
step "chunk dict image" "$NI" create -B "$WORK/dict.boot" -D "$WORK/blobs" "$WORK/src/l1"
step "Pack l1 with --chunk-dict bootstrap=<dict> (every chunk from the dict)" pack l1dict "$WORK/l1.tar" \
  --chunk-dict "bootstrap=$WORK/dict.boot" && step "read l1dict" extract_layer l1dict

# FeatureBatchSize + Encrypt: the converter appends `--batch-size X --encrypt`.
step "Pack l1 with --batch-size 0x10000 --encrypt" pack l1enc "$WORK/l1.tar" --batch-size 0x10000 --encrypt &&
  step "read l1enc" extract_layer l1enc &&
  step "check l1enc (whole blob: batch table, key from the blob table)" \
    "$NI" check -B "$WORK/merge/$(cat "$WORK/l1enc.digest")" --blob "$WORK/l1enc.blob" &&
  step "unpack l1enc (whole blob) equals l1.tar" bash -c '"$1" unpack --log-level warn -B "$2" --blob "$3" --output "$4" &&
    "$5" "$6" same "$7" "$4"' _ "$NI" "$WORK/merge/$(cat "$WORK/l1enc.digest")" "$WORK/l1enc.blob" \
    "$WORK/l1enc.out.tar" "$PY" "$TARS" "$WORK/l1.tar"

pack_dir() {
  local d=$WORK/pack-dir
  mkdir -p "$d" && mkfifo "$d/blob.rafs" && cat "$d/blob.rafs" >"$WORK/dir.blob" &
  sleep 0.2
  printf / | "$NI" create --log-level warn --prefetch-policy fs --blob "$d/blob.rafs" --whiteout-spec none \
    --fs-version 6 --source-type directory --inline-bootstrap "$WORK/src/l1"
  local rc=$?
  wait
  return $rc
}
step "Pack from a directory (--source-type directory --inline-bootstrap)" pack_dir && step "read dir" extract_layer dir

# ---- Unpack each layer as tool.Unpack (the layer's image.blob + image.boot) ----
unpack_layer() {
  local name=$1 hex d=$WORK/unpack-$1
  hex=$(cat "$WORK/$name.digest")
  mkdir -p "$d" && mkfifo "$d/oci.tar" || return 1
  cat "$d/oci.tar" >"$d/out.tar" &
  "$NI" unpack --log-level warn --bootstrap "$WORK/merge/$hex" --output "$d/oci.tar" --blob "$WORK/$name.data" || return 1
  wait
  "$PY" "$TARS" same "$WORK/${2:-$name}.tar" "$d/out.tar"
}
step "Unpack l1 equals l1.tar" unpack_layer l1
step "Unpack l2 equals l2.tar (whiteouts kept as files, spec none)" unpack_layer l2
step "Unpack l1lz4 equals l1.tar" unpack_layer l1lz4 l1

# ---- Merge as tool.Merge ----
merge_decode() {
  "$PY" - "$COMPAT_LIB" "$1" "$2" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[1])
from go_structs import decode, Struct
# pkg/converter/tool/builder.go: type outputJSON struct { Blobs []string }
doc = json.load(open(sys.argv[2]))
decode(doc, Struct("tool.outputJSON", {"blobs": ["string"]}))
want = sys.argv[3].split()
assert doc["blobs"] == want, (doc["blobs"], want)
PY
}
do_merge() {
  local out=$1; shift
  local args=() l
  for l in "$@"; do args+=("$WORK/merge/$(cat "$WORK/$l.digest")"); done
  printf / | "$NI" merge --log-level warn --prefetch-policy fs --output-json "$out.json" --bootstrap "$out" "${args[@]}"
}
step "Merge l1 l2 l3" do_merge "$WORK/merged" l1 l2 l3
# Blobs: the layers whose chunks the merged tree uses; l3 has none.
step "Merge output decodes as outputJSON, blobs = the layer digests (l3 has no chunks)" \
  merge_decode "$WORK/merged.json" "$(cat "$WORK/l1.digest") $(cat "$WORK/l2.digest")"
merged_tree() {
  "$NI" unpack --log-level warn "$WORK/merged" --blob-dir "$WORK/blobs" --output "$WORK/merged.tar" || return 1
  local r=$WORK/oracle
  mkdir -p "$r" && tar -C "$r" -xf "$WORK/l1.tar" && rm -f "$r/etc/gone" && rm -rf "$r/opq"/* &&
    tar -C "$r" -xf "$WORK/l2.tar" --exclude='*.wh.*' && tar -C "$r" -xf "$WORK/l3.tar" || return 1
  tar --numeric-owner -C "$r" -cf "$WORK/oracle.tar" . && "$PY" "$TARS" same "$WORK/oracle.tar" "$WORK/merged.tar"
}
step "merged image unpacks to the layers applied with whiteouts (tar -x oracle)" merged_tree
merge_dict() {
  local dict_id
  dict_id=$("$PY" -c 'import json,sys; print(json.load(sys.stdin)[0]["blob_id"])' < <("$NI" inspect "$WORK/dict.boot" -R blobs))
  printf / | "$NI" merge --log-level warn --prefetch-policy fs --output-json "$WORK/md.json" --bootstrap "$WORK/md" \
    --chunk-dict "bootstrap=$WORK/dict.boot" "$WORK/merge/$(cat "$WORK/l1dict.digest")" "$WORK/merge/$(cat "$WORK/l2.digest")" || return 1
  # l1dict stored nothing: its files point into the dict's blob.
  merge_decode "$WORK/md.json" "$dict_id $(cat "$WORK/l2.digest")" && "$NI" check "$WORK/md" -D "$WORK/blobs"
}
step "Merge with --chunk-dict (layers built with the dict)" merge_dict

# OCIRef-style merge: per-layer digests, ToC digests and sizes.
merge_ref() {
  local l1 l2 t1 t2 s1 s2
  l1=$(cat "$WORK/l1.digest"); l2=$(cat "$WORK/l2.digest")
  t1=$("$PY" "$BLOB" toc-digest "$WORK/l1.blob"); t2=$("$PY" "$BLOB" toc-digest "$WORK/l2.blob")
  s1=$(stat -c %s "$WORK/l1.blob"); s2=$(stat -c %s "$WORK/l2.blob")
  printf / | "$NI" merge --log-level warn --prefetch-policy fs --output-json "$WORK/mr.json" --bootstrap "$WORK/mr" \
    "$WORK/merge/$l1" "$WORK/merge/$l2" --blob-digests "$l1,$l2" --blob-toc-digests "$t1,$t2" --blob-sizes "$s1,$s2" || return 1
  merge_decode "$WORK/mr.json" "$l1 $l2" || return 1
  "$NI" inspect -B "$WORK/mr" -R blobs -J - | "$PY" -c '
import json, sys
doc = json.load(sys.stdin)
want = {sys.argv[1]: (sys.argv[3], int(sys.argv[5])), sys.argv[2]: (sys.argv[4], int(sys.argv[6]))}
for b in doc["blobs"]:
    toc, size = want[b["blob_id"]]
    assert b["toc_digest"] == toc and b["compressed_size"] == size, (b, toc, size)
' "$l1" "$l2" "$t1" "$t2" "$s1" "$s2"
}
step "Merge with --blob-digests/--blob-toc-digests/--blob-sizes sets them" merge_ref

# ---- nydusify check's calls ----
check_json() {
  "$NI" check --log-level warn --output-json "$WORK/check.json" --bootstrap "$WORK/merged" || return 1
  "$PY" - "$COMPAT_LIB" "$WORK/check.json" "$(cat "$WORK/l1.digest") $(cat "$WORK/l2.digest")" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[1])
from go_structs import decode, Struct
doc = json.load(open(sys.argv[2]))
# nydusify pkg/checker/rule/bootstrap.go: output{Blobs []string `json:"blobs"`}; and
# upstream's OutputSerializer keys, all of them.
decode(doc, Struct("rule.output", {"blobs": ["string"]}))
decode(doc, Struct("OutputSerializer", {"version": "string", "bootstrap": "string", "blobs": ["string"],
    "external_bootstrap": "string", "external_blobs": ["string"], "trace": "any",
    "fs_version": "string", "compressor": "string"}))
assert doc["blobs"] == sys.argv[3].split() and doc["fs_version"] == "6" and doc["compressor"] == "zstd", doc
PY
}
step "check --output-json (nydusify check's call) decodes, blobs right" check_json
inspect_blobs() {
  local out
  out=$("$NI" inspect "$WORK/merged" --request blobs 2>&1) || return 1
  "$PY" - "$COMPAT_LIB" "$out" "$WORK" <<'PY'
import json, os, sys
sys.path.insert(0, sys.argv[1])
from go_structs import decode, Struct
# nydusify pkg/checker/tool/inspector.go: BlobInfoList, from CombinedOutput.
t = [Struct("tool.BlobInfo", {"blob_id": "string", "compressed_size": "uint", "decompressed_size": "uint",
                              "readahead_offset": "uint", "readahead_size": "uint"})]
doc = decode(json.loads(sys.argv[2]), t)
assert len(doc) == 2
for b in doc:
    # compressed_size: what the inlined bootstrap recorded, at most the blob file.
    size = os.path.getsize(os.path.join(sys.argv[3], "blobs", b["blob_id"]))
    assert 0 < b["compressed_size"] <= size and b["decompressed_size"] >= 4096, (b, size)
PY
}
step "inspect BOOT --request blobs: only JSON on stdout+stderr, BlobInfo decodes" inspect_blobs
step "inspect -R stats / prefetch: upstream's JSON" bash -c '
  "$1" inspect "$2/merged" -R stats | "$3" -c "import json,sys; d=json.load(sys.stdin); assert d[\"inodes_count\"] > 5, d" &&
  "$1" inspect "$2/merged" -R prefetch | "$3" -c "import json,sys; d=json.load(sys.stdin); assert [p[\"path\"] for p in d] == [[\"/\"]], d"
' _ "$NI" "$WORK" "$PY"

# ---- prefetch lists as upstream reads them ----
prefetch_tar() {
  printf '/usr/bin\nrelative\n/usr/bin/big\n/etc/hello\n' | "$NI" create --prefetch-policy fs -t tar-rafs \
    -B "$WORK/pf.boot" -D "$WORK/pfblobs" "$WORK/l1.tar" 2>"$WORK/pf.err" || return 1
  grep -q relative "$WORK/pf.err" || { echo "no warning for a relative path"; return 1; }
  "$NI" inspect "$WORK/pf.boot" -R prefetch | "$PY" -c '
import json, sys
d = json.load(sys.stdin)
assert [p["path"] for p in d] == [["/usr/bin"], ["/etc/hello"]], d'
}
step "tar-rafs --prefetch-policy fs: table from stdin, relative/covered skipped" prefetch_tar

# ---- global options, aliases, exit codes ----
exit_is() { local want=$1; shift; "$@" >/dev/null 2>&1; local rc=$?; [ "$rc" -eq "$want" ] || { echo "exit $rc, want $want: $*"; return 1; }; }
B=$WORK/merged
step "-l before and after the subcommand, -L file" bash -c '
  "$1" --log-level warn check "$2" && "$1" check "$2" -l error && "$1" -L "$3/log.txt" check -B "$2" &&
  "$1" create -t dir-rafs -B "$3/g.boot" -D "$3/g" "$3/src/l2" -L "$3/log2.txt" 2>"$3/g.err" &&
  grep -q INFO "$3/log2.txt" && ! grep -q INFO "$3/g.err"' _ "$NI" "$B" "$WORK"
step "usage errors exit 2 (clap), help 0, failures 1" bash -c "
  $(declare -f exit_is)
  exit_is 2 '$NI' create --bogus x && exit_is 2 '$NI' --log-level loud check '$B' &&
  exit_is 2 '$NI' check '$B' -B '$B' && exit_is 2 '$NI' check && exit_is 2 '$NI' create -t tar-rafs --compressor gzip -D x y &&
  exit_is 0 '$NI' create -h && exit_is 0 '$NI' --version && exit_is 1 '$NI' check '$WORK/nonexistent' &&
  exit_is 2 '$NI' inspect"
inconsistent() {
  "$NI" create --chunk-size 0x10000 -B "$WORK/c64k.boot" -D "$WORK/blobs" "$WORK/src/l2" 2>/dev/null || return 1
  printf / | "$NI" merge --prefetch-policy fs -B "$WORK/bad" "$WORK/merge/$(cat "$WORK/l1.digest")" "$WORK/c64k.boot"
  [ $? -eq 2 ]
}
step "merge of layers with different chunk sizes exits 2 (InconsistentFilesystem)" inconsistent
step "aliases --source-type, --inline-bootstrap" bash -c '
  "$1" create --source-type dir-rafs --inline-bootstrap -D "$2/al" "$2/src/l1" && ls "$2/al" | grep -q .' _ "$NI" "$WORK"
cache_only() {
  local c=$WORK/cacheonly
  mkdir -p "$c"
  "$NI" create -B "$WORK/co.boot" --blob-cache-dir "$c" -J "$WORK/co.json" "$WORK/src/l1" || return 1
  local id
  id=$(blob_ids "$WORK/co.json")
  [ -f "$c/$id.blob.data" ] && [ -f "$c/$id.blob.meta" ] || { ls -la "$c"; return 1; }
  [ "$(ls "$c" | wc -l)" -eq 2 ] || { echo "more than the cache files:"; ls -la "$c"; return 1; }
  # The uncompressed layout holds each file's bytes at its chunk's offset.
  cmp -n 6 "$c/$id.blob.data" <(cat "$WORK/src/l1/etc/hello") >/dev/null 2>&1 || grep -q hello "$c/$id.blob.data"
  # Alone it conflicts with --compressor / --blob-inline-meta as upstream; with
  # -D/--blob (upstream refuses) we write both, the kernel-mount workflow's use.
  exit_is 2 "$NI" create -B "$WORK/x.boot" --blob-cache-dir "$c" --compressor zstd "$WORK/src/l1" &&
    exit_is 2 "$NI" create --blob-cache-dir "$c" --blob-inline-meta "$WORK/src/l1"
}
step "create --blob-cache-dir alone: only <id>.blob.data/.blob.meta; conflicts exit 2" cache_only

# ---- upstream docs/nydus-image.md examples that apply ----
docs() {
  local d=$WORK/doc && mkdir -p "$d/images" "$d/image" && cd "$d" || return 1
  cp -a "$WORK/src/l1" src && cp "$WORK/l1.tar" src.tar && gzip -k src.tar || return 1
  nydus-image() { "$NI" "$@"; }
  nydus-image create -t dir-rafs -B images/bootstrap -D images/ src || return 1
  nydus-image create -t targz-rafs -B images/gz.boot -D images/ src.tar.gz || return 1
  nydus-image create -t dir-rafs -B image/bootstrap -D image/ -J out.json src || return 1
  nydus-image unpack --blob-dir=image/ image/bootstrap --output tmp.tar || return 1
  "$PY" "$TARS" same src.tar tmp.tar || return 1
  nydus-image unpack --blob "image/$(blob_ids out.json)" image/bootstrap --output tmp2.tar && cmp tmp.tar tmp2.tar || return 1
  nydus-image check --bootstrap images/bootstrap -J output.json && grep -q '"blobs"' output.json
}
step "upstream docs/nydus-image.md examples (dir-rafs, targz-rafs, unpack, check -J)" docs

summary
