#!/usr/bin/env bash
# Builds the libbpf shared object that is embedded in the agent binary and loaded from a memfd,
# with libelf and zlib linked in statically, so the binary needs nothing from the host but glibc.
# All three come from the Debian archive's source tarballs (pinned by SHA-256): libbpf at the
# version of bookworm's libbpf-dev (whose BPF-side headers bpf/ compiles with), elfutils and zlib
# at bookworm's versions. Debian's own libelf.a/libz.a cannot be used: they are not
# position-independent (libelf.a has local-exec TLS relocations), so a shared object cannot hold them.
#
#   scripts/build-libbpf.sh [x86_64|aarch64]     (default: the build machine's architecture)
#
# Output: .output/<arch>/libbpf.so (stripped; NEEDED only libc) and .output/<arch>/libbpf.versions;
# for the build machine's architecture also .output/libbpf.so, which src/kernel/embedded.ts embeds.
# Needs: curl, make, gcc, bzip2; for aarch64 gcc-aarch64-linux-gnu (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

host_arch=$(uname -m)
ARCH=${1:-$host_arch}
case "$ARCH" in
  x86_64) CROSS= ;;
  aarch64|arm64) ARCH=aarch64; CROSS=aarch64-linux-gnu- ;;
  *) echo "build-libbpf: unsupported architecture $ARCH (x86_64, aarch64)" >&2; exit 2 ;;
esac
[[ "$ARCH" == "$host_arch" ]] && CROSS=
CC=${CROSS}gcc
command -v "$CC" >/dev/null || { echo "build-libbpf: $CC not found (apt-get install gcc-aarch64-linux-gnu)" >&2; exit 1; }

# name version sha256 url-path  (the SBOM, scripts/release.ts, reads libbpf.versions)
LIBBPF=(libbpf 1.1.2 b50ab60637fb713db78aa98e6ca911ddf13c0799d498a1f6ec03ebffc7dca588 libb/libbpf/libbpf_1.1.2.orig.tar.gz)
ELFUTILS=(elfutils 0.188 fb8b0e8d0802005b9a309c60c1d8de32dd2951b56f0c3a3cb56d21ce01595dff e/elfutils/elfutils_0.188.orig.tar.bz2)
ZLIB=(zlib 1.2.13.dfsg 71feb7947e3c00ef125f83b79a4e529bde31171e5babe48b391f06758d1ab0a1 z/zlib/zlib_1.2.13.dfsg.orig.tar.bz2)
# Bump when the build steps change, so cached outputs are rebuilt.
RECIPE=4

OUT=.output
WORK="$OUT/$ARCH"
SRC="$OUT/src"              # downloaded tarballs, shared by all architectures
PREFIX="$PWD/$WORK/deps"     # static PIC libelf.a + libz.a and their headers
mkdir -p "$WORK" "$SRC"
stamp="recipe=$RECIPE ${LIBBPF[0]}=${LIBBPF[1]} ${ELFUTILS[0]}=${ELFUTILS[1]} ${ZLIB[0]}=${ZLIB[1]}"

stage_host() { # the build machine's libbpf.so is what src/kernel/embedded.ts imports
  if [[ "$ARCH" == "$host_arch" ]] && ! cmp -s "$WORK/libbpf.so" "$OUT/libbpf.so"; then
    cp "$WORK/libbpf.so" "$OUT/libbpf.so.tmp" && mv "$OUT/libbpf.so.tmp" "$OUT/libbpf.so"
  fi
}
if [[ -f "$WORK/libbpf.so" && "$(cat "$WORK/libbpf.stamp" 2>/dev/null)" == "$stamp" ]]; then
  stage_host
  exit 0
fi

fetch() { # name version sha256 url-path -> path of the verified tarball
  local file="$SRC/${4##*/}"
  if [[ ! -f "$file" ]] || ! echo "$3  $file" | sha256sum -c --quiet - >/dev/null 2>&1; then
    echo "fetching $1 $2 source from the Debian archive" >&2
    curl -fsSL --retry 3 -o "$file.tmp" "http://deb.debian.org/debian/pool/main/$4"
    echo "$3  $file.tmp" | sha256sum -c --quiet - >&2
    mv "$file.tmp" "$file"
  fi
  echo "$file"
}

unpack() { # tarball -> fresh directory under $WORK
  local dir="$WORK/$(basename "$1" | sed -E 's/\.orig\.tar\..*//; s/_/-/')"
  rm -rf "$dir"
  mkdir -p "$dir"
  tar -C "$dir" --strip-components=1 -xf "$1"
  echo "$dir"
}

log="$PWD/$WORK/build.log"
: > "$log"
run() { "$@" >>"$log" 2>&1 || { echo "build-libbpf: failed: $* (last lines of $log:)" >&2; tail -n 30 "$log" >&2; exit 1; }; }
rm -rf "$PREFIX"
mkdir -p "$PREFIX/lib" "$PREFIX/include"
export CFLAGS="-O2 -g -fPIC"

# --- zlib: static, PIC ---------------------------------------------------------------------
zdir=$(unpack "$(fetch "${ZLIB[@]}")")
(cd "$zdir" && run env CC="$CC" AR="${CROSS}ar" RANLIB="${CROSS}ranlib" ./configure --static --prefix="$PREFIX")
run make -C "$zdir" -j"$(nproc)" libz.a
run make -C "$zdir" install

# --- libelf (elfutils): static, PIC; only lib/ and libelf/, no bzip2/lzma/zstd -------------
edir=$(unpack "$(fetch "${ELFUTILS[@]}")")
host_opt=()
[[ -n "$CROSS" ]] && host_opt=(--host="${CROSS%-}")
(cd "$edir" && run env CC="$CC" CPPFLAGS="-I$PREFIX/include" LDFLAGS="-L$PREFIX/lib" ./configure "${host_opt[@]}" \
   --prefix="$PREFIX" --disable-debuginfod --disable-libdebuginfod --disable-nls --without-bzlib --without-lzma \
   --without-zstd --disable-demangler --disable-symbol-versioning)
run make -C "$edir/lib" -j"$(nproc)"
run make -C "$edir/libelf" -j"$(nproc)" libelf.a
cp "$edir/libelf/libelf.a" "$PREFIX/lib/"
cp "$edir/libelf/libelf.h" "$edir/libelf/gelf.h" "$edir/libelf/nlist.h" "$PREFIX/include/"
mkdir -p "$PREFIX/include/elfutils"
cp "$edir/libelf/elf-knowledge.h" "$edir/version.h" "$PREFIX/include/elfutils/" 2>/dev/null || true

# --- libbpf: position-independent objects, against the headers above ------------------------
bdir=$(unpack "$(fetch "${LIBBPF[@]}")")
objdir="$PWD/$WORK/libbpf-build"
rm -rf "$objdir"
run make -C "$bdir/src" -j"$(nproc)" CC="$CC" OBJDIR="$objdir" NO_PKG_CONFIG=1 CFLAGS="-g -O2 -Wall" \
  EXTRA_CFLAGS="-I$PREFIX/include" LDFLAGS="-L$PREFIX/lib" BUILD_STATIC_ONLY= "$objdir/libbpf.so.${LIBBPF[1]}"

# --- link: one shared object, libelf and zlib inside, only libbpf's API exported ------------
# Objects linked into libbpf.so: add others (C helpers for the agent) to link_objs, and their
# exported symbols to the version script.
run "$CC" $CFLAGS -fvisibility=hidden -c scripts/native/glibc-compat.c -o "$WORK/glibc-compat.o"
run "$CC" $CFLAGS -Wall -Werror -fvisibility=hidden -c scripts/native/ring-wakeup.c -o "$WORK/ring-wakeup.o"
link_objs=("$objdir"/sharedobjs/*.o "$WORK/glibc-compat.o" "$WORK/ring-wakeup.o")
# libbpf's API plus the agent's own helpers (their own version node)
{ cat "$bdir/src/libbpf.map"; printf 'EBPF_TRACER_1 {\n\tglobal:\n\t\tet_wakeup_open;\n\t\tet_wakeup_run;\n};\n'; } > "$WORK/exports.map"
compat_wraps=-Wl,--wrap=fstat,--wrap=fcntl64,--wrap=fmemopen   # see scripts/native/glibc-compat.c
run "$CC" -shared -Wl,--version-script="$WORK/exports.map" -Wl,-soname,libbpf.so.1 -Wl,-z,defs $compat_wraps \
  "${link_objs[@]}" "$PREFIX/lib/libelf.a" "$PREFIX/lib/libz.a" -o "$WORK/libbpf.so.tmp"
run "${CROSS}strip" --strip-unneeded "$WORK/libbpf.so.tmp"

# The binary's glibc floor is the Bun runtime's (2.17): nothing in libbpf.so may need newer.
too_new=$("${CROSS}objdump" -T "$WORK/libbpf.so.tmp" | { grep -oE 'GLIBC_[0-9.]+\) +[A-Za-z0-9_]+' || true; } | tr -d ')' |
  sort -u | awk '{ split(substr($1, 7), v, "."); if (v[1] + 0 > 2 || v[2] + 0 > 17) print }' | tr '\n' ' ')
if [[ -n "$too_new" ]]; then
  echo "build-libbpf: $WORK/libbpf.so needs glibc newer than 2.17: $too_new(wrap them in scripts/native/glibc-compat.c)" >&2
  exit 1
fi
needed=$("${CROSS}readelf" -d "$WORK/libbpf.so.tmp" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
for lib in $needed; do
  case "$lib" in libc.so.6|ld-linux*) ;; *) echo "build-libbpf: $WORK/libbpf.so needs $lib from the host; only glibc is allowed" >&2; exit 1 ;; esac
done
mv "$WORK/libbpf.so.tmp" "$WORK/libbpf.so"
printf '%s %s\n' "${LIBBPF[0]}" "${LIBBPF[1]}" "${ELFUTILS[0]}" "${ELFUTILS[1]}" "${ZLIB[0]}" "${ZLIB[1]}" > "$WORK/libbpf.versions"
echo "$stamp" > "$WORK/libbpf.stamp"
rm -rf "$zdir" "$edir" "$bdir" "$objdir"
stage_host
echo "built $WORK/libbpf.so ($(stat -c %s "$WORK/libbpf.so") bytes; NEEDED: $needed; libelf ${ELFUTILS[1]}, zlib ${ZLIB[1]} inside)" >&2
