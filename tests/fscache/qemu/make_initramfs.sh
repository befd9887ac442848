#!/usr/bin/env bash
# Build a gzip'd newc initramfs for the QEMU guest tests.
#
# Usage: tests/fscache/qemu/make_initramfs.sh OUT.cpio.gz INIT_SCRIPT [EXTRA ...]
#   INIT_SCRIPT  becomes /init (mode 755); it runs as PID 1 under busybox sh.
#   EXTRA        SRC[:DEST]; DEST defaults to /bin/<basename of SRC>. A directory
#                SRC is copied recursively. For each dynamically linked ELF file
#                (SRC itself, or inside a directory SRC) the libraries ldd reports and
#                the ELF interpreter are copied to the same paths inside the image.
#                Libraries loaded with dlopen() are NOT found: pass them as EXTRAs.
#   The guest helpers go in as: tests/fscache/qemu/guest_lib.sh:/lib/guest_lib.sh
#
# The image holds busybox-static at /bin/busybox with a /bin symlink for every
# applet, /dev /proc /sys /tmp /mnt /cache, and /etc with root in passwd/group.
# Everything is owned by root:root in the archive, so no root is needed to build it
# (except to apt-get install busybox-static/cpio when they are missing).
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2; exit 2; }
log() { echo "make_initramfs: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ $# -ge 2 ] || usage
OUT=$1 INIT=$2
shift 2
[ -r "$INIT" ] || die "init script not readable: $INIT"

pkg_installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }
missing=()
for p in busybox-static cpio; do pkg_installed "$p" || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "${SKIP_APT:-0}" = 1 ] && die "missing packages (SKIP_APT=1): ${missing[*]}"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  log "installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
BUSYBOX=/bin/busybox
# busybox-static ships /bin/busybox; the dynamic 'busybox' package would clash, so check.
if ! LC_ALL=C readelf -l "$BUSYBOX" 2>/dev/null | grep -q 'Elf file type' ||
   LC_ALL=C readelf -l "$BUSYBOX" | grep -q 'program interpreter'; then
  die "$BUSYBOX is not a static binary (is the 'busybox' package installed instead of busybox-static?)"
fi

ROOT=$(mktemp -d "${TMPDIR:-/tmp}/nydus-initramfs.XXXXXX")
trap 'rm -rf "$ROOT"' EXIT

mkdir -p "$ROOT"/{bin,sbin,dev,proc,sys,tmp,mnt,cache,etc,lib,root,run,var}
chmod 1777 "$ROOT/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$ROOT/bin/$applet"
done
install -m 755 "$INIT" "$ROOT/init"

# Minimal /etc: getpwuid(0)/getgrgid(0) must succeed for tools that print owners
# or drop privileges; nsswitch.conf pins glibc to the files backend.
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$ROOT/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$ROOT/etc/group"
printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files\n' > "$ROOT/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n' > "$ROOT/etc/hosts"
ln -s /proc/mounts "$ROOT/etc/mtab"

# Copy a host file to the same path inside the image, dereferencing symlinks
# (a /lib/x86_64-linux-gnu/libfoo.so.1 symlink becomes a regular file).
copy_same_path() {
  local src=$1
  [ -e "$ROOT$src" ] && return 0
  mkdir -p "$ROOT$(dirname "$src")"
  cp -L "$src" "$ROOT$src"
}

is_dynamic_elf() {
  [ -f "$1" ] && [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ] &&
    LC_ALL=C readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter'
}

copy_deps() {
  local bin=$1 interp line lib
  interp=$(LC_ALL=C readelf -l "$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')
  # PT_INTERP is an absolute path (/lib64/ld-linux-x86-64.so.2) baked into the binary.
  [ -n "$interp" ] || die "$bin: no ELF interpreter found"
  copy_same_path "$interp"
  while IFS= read -r line; do
    line=${line#"${line%%[![:space:]]*}"}   # ldd indents with a tab
    case $line in
      *'not found'*) die "$bin: ldd: $line" ;;
      *'=> /'*) lib=${line#*=> } ;;
      /*) lib=$line ;;          # the interpreter line
      *) continue ;;            # linux-vdso.so.1 (no file)
    esac
    copy_same_path "${lib%% (*}"
  done < <(ldd "$bin")
}

for extra in "$@"; do
  src=${extra%%:*}
  if [ "$src" = "$extra" ]; then dest=/bin/$(basename "$src"); else dest=${extra#*:}; fi
  [ -e "$src" ] || die "EXTRA not found: $src"
  case $dest in /*) ;; *) die "EXTRA destination must be absolute: $extra" ;; esac
  mkdir -p "$ROOT$(dirname "$dest")"
  # rm first: DEST may be a busybox applet symlink, and cp would write through it.
  rm -rf "${ROOT:?}$dest"
  if [ -d "$src" ]; then
    cp -a "$src" "$ROOT$dest"
    while IFS= read -r -d '' f; do
      if is_dynamic_elf "$f"; then copy_deps "$f"; fi
    done < <(find "$src" -type f -perm -u+x -print0)
  else
    cp -L "$src" "$ROOT$dest"
    if is_dynamic_elf "$src"; then copy_deps "$src"; fi
  fi
done

mkdir -p "$(dirname "$OUT")"
# -R 0:0: root-owned even when built by an unprivileged user. /dev/console comes
# from the kernel's built-in initramfs, so no device nodes (and no root) are needed.
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) | gzip -1 > "$OUT.tmp.$$"
mv -f "$OUT.tmp.$$" "$OUT"
log "wrote $OUT ($(du -h "$OUT" | cut -f1))"
