#!/usr/bin/env bash
# Rebuild fuzz/corpus/ from scratch: builds a tiny tree into a few images with
# $NYDUS_BIN_DIR/nydus-image (default build/bin) and hands them to make_corpus.py.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NI=${NYDUS_BIN_DIR:-$ROOT/build/bin}/nydus-image
FIX=${NYDUS_FIXTURES_DIR:-$ROOT/tests/fixtures/upstream}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
S=$T/src; O=$T/out; mkdir -p "$S/d/e" "$O"
echo hello >"$S/a.txt"; head -c 9000 /dev/urandom >"$S/d/bin"; printf 'x%.0s' $(seq 1 5000) >"$S/d/e/rep"
ln -s a.txt "$S/link"; ln -s "../../$(printf 'p%.0s' $(seq 1 100))" "$S/d/longlink"; ln "$S/a.txt" "$S/hard"
mkfifo "$S/fifo"; touch "$S/empty"
setfattr -n user.k -v value "$S/a.txt" 2>/dev/null || true
setfattr -n user.big -v "$(printf 'v%.0s' $(seq 1 200))" "$S/d" 2>/dev/null || true
i=0
for c in none lz4_block zstd; do
  for f in "" "--features blob-toc" "-A --features blob-toc"; do
    i=$((i + 1))
    # shellcheck disable=SC2086
    "$NI" create -B "$O/b$i.boot" -b "$O/blob$i" -c $c -S 0x1000 $f "$S" >/dev/null
  done
done
printf '/a.txt\n/d\n' >"$T/pf"
"$NI" create -B "$O/b10.boot" -b "$O/blob10" -d sha256 -P fs --prefetch-files "$T/pf" "$S" >/dev/null
rm -rf "$ROOT/fuzz/corpus"
cd "$O" && python3 "$ROOT/fuzz/make_corpus.py" "$O" "$FIX"
du -sh "$ROOT"/fuzz/corpus/*
