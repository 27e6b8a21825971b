# Shared by test/kernels/run.sh and matrix.sh (sourced, not run): fetching Debian kernels from the
# archive, extracting them, building the guest initramfs and booting it with qemu (TCG only).
#
# Nothing here changes the host's apt configuration: every suite gets its own sources list, lists
# and state under $KT_CACHE/apt/<suite>, passed to apt-get/apt-cache with -o options.

KT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KT_ROOT=$(cd "$KT_DIR/../.." && pwd)
KT_CACHE=${KT_CACHE:-/var/cache/ebpf-tracer-test/kernels}
KT_MIRROR=${KT_MIRROR:-http://deb.debian.org/debian}
KT_KEYRING=${KT_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
# Guest architecture: amd64 (default) or arm64. run.sh sets it from a spec ending in "@arm64".
KT_ARCH=${KT_ARCH:-amd64}
case "$KT_ARCH" in
  amd64) KT_BIN=${KT_BIN:-$KT_ROOT/dist/ebpf-tracer} ;;
  arm64) KT_BIN=${KT_BIN:-$KT_ROOT/dist/ebpf-tracer-linux-aarch64} ;;
  *) echo "[kernels] error: KT_ARCH must be amd64 or arm64" >&2; exit 2 ;;
esac
# apt lists younger than this many minutes are not refreshed
KT_APT_MAX_AGE=${KT_APT_MAX_AGE:-360}
# modules loaded in every guest when the kernel has them as modules (for -nic/-drive virtio)
KT_MODULES=${KT_MODULES:-virtio_pci virtio_net virtio_blk}

kt_log() { echo "[kernels] $*" >&2; }
kt_die() { echo "[kernels] error: $*" >&2; exit 2; }

# ---------------------------------------------------------------------------------------------
# apt, one private state per suite

kt_apt_dir() { if [[ $KT_ARCH == amd64 ]]; then echo "$KT_CACHE/apt/$1"; else echo "$KT_CACHE/apt/$1-$KT_ARCH"; fi; }

kt_apt_opts() { # SUITE -> prints one option per line
  local d; d=$(kt_apt_dir "$1")
  printf '%s\n' \
    -o "Dir::Etc::sourcelist=$d/sources.list" -o "Dir::Etc::sourceparts=$d/empty" \
    -o "Dir::Etc::preferences=$d/empty/none" -o "Dir::Etc::preferencesparts=$d/empty" \
    -o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o "Dir::State::status=$d/status" \
    -o "APT::Architecture=$KT_ARCH" -o "APT::Architectures::=$KT_ARCH" -o "Acquire::Languages=none" \
    -o "APT::Sandbox::User=root" -o "Acquire::Retries=2" -o "Acquire::http::Timeout=30"
}

kt_apt() { # SUITE apt-get|apt-cache ARGS...
  local suite=$1 tool=$2; shift 2
  local opts; mapfile -t opts < <(kt_apt_opts "$suite")
  "$tool" -q "${opts[@]}" "$@"
}

# Refreshes the suite's package lists when older than KT_APT_MAX_AGE minutes. Fails (status 1)
# when they cannot be fetched and none are cached.
kt_apt_update() {
  local suite=$1 d; d=$(kt_apt_dir "$suite")
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/empty"
  [[ -f "$d/status" ]] || : > "$d/status"
  echo "deb [signed-by=$KT_KEYRING] $KT_MIRROR $suite main" > "$d/sources.list"
  if [[ -f "$d/updated" && -z $(find "$d/updated" -mmin +"$KT_APT_MAX_AGE") ]]; then return 0; fi
  if timeout 300 env DEBIAN_FRONTEND=noninteractive apt-get -q $(kt_apt_opts "$suite" | tr '\n' ' ') update >"$d/update.log" 2>&1 \
     && ! grep -qE '^(W|E): Failed' "$d/update.log"; then
    touch "$d/updated"
    return 0
  fi
  if compgen -G "$d/lists/*Packages*" >/dev/null; then
    kt_log "apt update of $suite failed, using the cached lists: $(grep -E '^(W|E):' "$d/update.log" | head -n 2 | tr '\n' ' ')"
    return 0
  fi
  kt_log "apt update of $suite failed: $(tail -n 3 "$d/update.log" | tr '\n' ' ')"
  return 1
}

# SUITE PACKAGE -> prints the path of the downloaded .deb under $KT_CACHE/debs
kt_apt_download() {
  local suite=$1 pkg=$2 debs="$KT_CACHE/debs"
  mkdir -p "$debs"
  local ver; ver=$(kt_apt "$suite" apt-cache show --no-all-versions "$pkg" 2>/dev/null | sed -n 's/^Version: //p' | head -n 1)
  [[ -n "$ver" ]] || { kt_log "package $pkg is not in $suite"; return 1; }
  local file="${pkg}_${ver//:/%3a}_$KT_ARCH.deb"
  if [[ ! -s "$debs/$file" ]]; then
    kt_log "downloading $pkg $ver from $suite"
    (cd "$debs" && kt_apt "$suite" apt-get download "$pkg=$ver" >"$debs/.download.log" 2>&1) \
      || { kt_log "apt-get download $pkg=$ver failed: $(tail -n 3 "$debs/.download.log" | tr '\n' ' ')"; return 1; }
  fi
  [[ -s "$debs/$file" ]] || { kt_log "apt-get download gave no $debs/$file"; return 1; }
  echo "$debs/$file"
}

# A meta package (linux-image-cloud-amd64, linux-image-amd64) -> the versioned package it pulls in.
kt_real_kernel_pkg() {
  local suite=$1 pkg=$2
  if [[ "$pkg" =~ ^linux-image-[0-9] ]]; then echo "$pkg"; return; fi
  kt_apt "$suite" apt-cache show --no-all-versions "$pkg" 2>/dev/null \
    | sed -n 's/^Depends: //p' | head -n 1 | tr ',|' '\n\n' | sed 's/^ *//; s/ .*//' \
    | grep -E '^linux-image-[0-9]' | head -n 1
}

# ---------------------------------------------------------------------------------------------
# kernels

# Kernel spec -> .deb path. Specs: SUITE (linux-image-cloud-amd64 of that suite), SUITE/PACKAGE
# (meta or versioned), or a path to a linux-image .deb. Works offline from an earlier resolution.
kt_fetch_kernel() {
  local spec=$1
  if [[ "$spec" == *.deb ]]; then
    [[ -s "$spec" ]] || kt_die "no such file: $spec"
    realpath "$spec"; return
  fi
  local suite=${spec%%/*} pkg=linux-image-cloud-$KT_ARCH
  [[ "$spec" == */* ]] && pkg=${spec#*/}
  local rec="$KT_CACHE/resolved/$suite--$pkg--$KT_ARCH" deb=""
  mkdir -p "$KT_CACHE/resolved"
  if kt_apt_update "$suite"; then
    local real; real=$(kt_real_kernel_pkg "$suite" "$pkg")
    if [[ -n "$real" ]]; then
      deb=$(kt_apt_download "$suite" "$real") && echo "$deb" > "$rec"
    else
      kt_log "cannot resolve $pkg in $suite"
    fi
  fi
  if [[ -z "$deb" && -s "$rec" && -s "$(cat "$rec")" ]]; then
    deb=$(cat "$rec")
    kt_log "using the cached $deb for $spec"
  fi
  [[ -n "$deb" ]] || kt_die "cannot get a kernel package for $spec"
  echo "$deb"
}

# Copies module M and what it depends on (the .modinfo "depends=" of each .ko) from MODDIR into
# OUT, decompressed, appending file names to OUT/order dependencies first. Modules the kernel has
# built in are simply not found and skipped. (No depmod: the .deb has no modules.dep and the
# host may have no kmod.)
kt_copy_module() {
  local moddir=$1 out=$2 m=${3//-/_}
  grep -qx "$m.ko" "$out/order" 2>/dev/null && return 0
  local src; src=$(find "$moddir/kernel" -name "$m.ko*" -o -name "${m//_/-}.ko*" | head -n 1)
  [[ -n "$src" ]] || return 0
  case "$src" in
    *.xz) xz -dc "$src" > "$out/$m.ko" ;;
    *.zst) zstd -qdc "$src" > "$out/$m.ko" ;;
    *.gz) gzip -dc "$src" > "$out/$m.ko" ;;
    *) cp "$src" "$out/$m.ko" ;;
  esac
  local d
  for d in $(tr '\0' '\n' < "$out/$m.ko" | sed -n 's/^depends=//p' | head -n 1 | tr ',' ' '); do
    kt_copy_module "$moddir" "$out" "$d"
  done
  echo "$m.ko" >> "$out/order"
}

# .deb -> prints the directory holding vmlinuz, config, release, modules/ (decompressed .ko and
# load-order), extracting it once.
kt_prepare_kernel() {
  local deb=$1 name; name=$(basename "$deb" .deb)
  local kdir="$KT_CACHE/kernels/$name"
  # bump when what is extracted changes
  local stamp="prepared-3"
  if [[ -f "$kdir/$stamp" ]]; then echo "$kdir"; return; fi
  local tmp; tmp=$(mktemp -d "$KT_CACHE/.extract.XXXXXX")
  dpkg-deb -x "$deb" "$tmp" || { rm -rf "$tmp"; kt_die "dpkg-deb -x $deb failed"; }
  local vmlinuz; vmlinuz=$(ls "$tmp"/boot/vmlinuz-* 2>/dev/null | head -n 1)
  [[ -n "$vmlinuz" ]] || { rm -rf "$tmp"; kt_die "$deb has no boot/vmlinuz-*"; }
  local release=${vmlinuz##*/vmlinuz-}
  rm -rf "$kdir"; mkdir -p "$kdir/modules"
  cp "$vmlinuz" "$kdir/vmlinuz"
  cp "$tmp/boot/config-$release" "$kdir/config" 2>/dev/null || true
  local moddir
  for moddir in "$tmp/lib/modules/$release" "$tmp/usr/lib/modules/$release" ""; do [[ -d "$moddir" ]] && break; done
  : > "$kdir/modules/order"
  if [[ -n "$moddir" ]]; then
    local m
    for m in $KT_MODULES; do kt_copy_module "$moddir" "$kdir/modules" "$m"; done
  fi
  echo "$(dpkg-deb -f "$deb" Package) $(dpkg-deb -f "$deb" Version)" > "$kdir/package"
  echo "$release" > "$kdir/release"
  touch "$kdir/$stamp"
  rm -rf "$tmp"
  echo "$kdir"
}

# /etc/os-release the guest gets: the Debian release the kernel was built for (from the suite or
# the package version), so the agent's BTF lookup sees debian/<version>. KT_OS_VERSION_ID overrides.
kt_os_release() {
  local spec=$1 version=$2 v=${KT_OS_VERSION_ID:-}
  if [[ -z "$v" ]]; then
    case "$spec" in
      buster*) v=10 ;; bullseye*) v=11 ;; bookworm*) v=12 ;; trixie*) v=13 ;; forky*) v=14 ;;
      *) case "$version" in
           *bpo10*|*deb10*) v=10 ;; *bpo11*|*deb11*) v=11 ;; *bpo12*|*deb12*) v=12 ;; *bpo13*|*deb13*) v=13 ;;
           5.10.*) v=11 ;; 6.1.*) v=12 ;; 6.12.*) v=13 ;; *) v=12 ;;
         esac ;;
    esac
  fi
  local code
  case "$v" in 10) code=buster ;; 11) code=bullseye ;; 12) code=bookworm ;; 13) code=trixie ;; 14) code=forky ;; *) code="" ;; esac
  cat <<EOF
PRETTY_NAME="Debian GNU/Linux $v ($code)"
NAME="Debian GNU/Linux"
VERSION_ID="$v"
VERSION="$v ($code)"
VERSION_CODENAME=$code
ID=debian
EOF
}

# ---------------------------------------------------------------------------------------------
# guest userspace

# Prints the path of a file extracted once from a bookworm package: DEB_PACKAGE PATH_IN_DEB.
kt_from_deb() {
  local pkg=$1 path=$2 out="$KT_CACHE/userspace/$1/$(basename "$2")"
  [[ $KT_ARCH == amd64 ]] || out="$KT_CACHE/userspace/$KT_ARCH/$1/$(basename "$2")"
  if [[ ! -x "$out" ]]; then
    kt_apt_update bookworm || kt_die "cannot fetch bookworm's package lists for $pkg"
    local deb; deb=$(kt_apt_download bookworm "$pkg") || kt_die "cannot download $pkg"
    local tmp; tmp=$(mktemp -d)
    dpkg-deb -x "$deb" "$tmp"
    [[ -f "$tmp/$path" ]] || { rm -rf "$tmp"; kt_die "$pkg has no $path"; }
    mkdir -p "$(dirname "$out")"
    cp "$tmp/$path" "$out.tmp" && mv "$out.tmp" "$out"
    rm -rf "$tmp"
  fi
  echo "$out"
}

# busybox (static): the guest's shell and tools, wget as the client, httpd on the host for downloads
kt_busybox() { kt_from_deb busybox-static bin/busybox; }
# busybox for the host side (cpio, httpd): amd64 whatever the guest is
kt_host_busybox() { KT_ARCH=amd64 kt_from_deb busybox-static bin/busybox; }
# nginx: the guest's server (bookworm's, dynamically linked against the host's libraries)
kt_nginx() { kt_from_deb nginx usr/sbin/nginx; }

# The shared libraries the guest binaries need: what ldd lists for them (the agent: glibc only;
# its libbpf carries libelf and zlib). Prints host paths.
kt_guest_libs() {
  local f libs=()
  for f in "$@"; do
    libs+=($(ldd "$f" | awk '/=>/ { print $3 } /^\t\// { print $1 }'))
  done
  local missing; missing=$(for f in "$@"; do ldd "$f"; done | awk '/not found/ { print $1 }' | sort -u | tr '\n' ' ')
  [[ -z "$missing" ]] || kt_die "host libraries missing for the guest: $missing"
  printf '%s\n' "${libs[@]}" | grep '^/' | sort -u
}

# arm64 guests: the host's ldd cannot read arm64 binaries, so the libraries come from bookworm's
# arm64 packages: glibc for the agent, and what nginx links (libcrypt, pcre2, OpenSSL, zlib).
# Extracted once into a sysroot; copies its lib directories into DIR.
KT_ARM64_LIB_PKGS="libc6 libcrypt1 libpcre2-8-0 libssl3 zlib1g"
kt_arm64_libs() {
  local dest=$1 root="$KT_CACHE/userspace/arm64/sysroot"
  if [[ ! -f "$root/.done" ]]; then
    kt_apt_update bookworm || kt_die "cannot fetch bookworm's arm64 package lists"
    rm -rf "$root"; mkdir -p "$root"
    local p deb
    for p in $KT_ARM64_LIB_PKGS; do
      deb=$(kt_apt_download bookworm "$p") || kt_die "cannot download $p (arm64)"
      dpkg-deb -x "$deb" "$root"
    done
    rm -rf "$root/usr/share" "$root/usr/lib/aarch64-linux-gnu/gconv" "$root/usr/lib/aarch64-linux-gnu/audit"
    touch "$root/.done"
  fi
  # bookworm is merged-/usr on installed systems, but the packages ship /lib paths
  mkdir -p "$dest/lib" "$dest/usr/lib"
  cp -a "$root/lib/." "$dest/lib/" 2>/dev/null || true
  cp -a "$root/usr/lib/." "$dest/usr/lib/" 2>/dev/null || true
}

# Base initramfs (newc cpio, uncompressed: TCG decompresses slowly): busybox, nginx, the agent
# binary, their libraries, the web root. Rebuilt when the binary, busybox, nginx or this file
# changes. Prints its path.
kt_base_initramfs() {
  local bb nginx; bb=$(kt_busybox); nginx=$(kt_nginx)
  [[ -x "$KT_BIN" ]] || kt_die "$KT_BIN is not built (bun run build)"
  local key; key=$( { echo "$KT_ARCH"; stat -L -c '%s %Y %i' "$KT_BIN"; sha256sum "$bb" "$nginx" "$KT_DIR/lib.sh"; } | sha256sum | cut -c1-16)
  local out="$KT_CACHE/initramfs/base-$KT_ARCH-$key.cpio"
  if [[ -s "$out" ]]; then echo "$out"; return; fi
  mkdir -p "$KT_CACHE/initramfs"
  local st; st=$(mktemp -d "$KT_CACHE/.stage.XXXXXX")
  mkdir -p "$st"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,lib64,www} \
    "$st"/var/{lib/nginx,log/nginx,lib/ebpf-tracer}
  cp "$bb" "$st/bin/busybox"
  cp "$nginx" "$st/usr/sbin/nginx"
  cp "$KT_BIN" "$st/ebpf-tracer"
  local lib
  if [[ $KT_ARCH == arm64 ]]; then
    kt_arm64_libs "$st"
  else
    for lib in $(kt_guest_libs "$KT_BIN" "$nginx"); do
      mkdir -p "$st$(dirname "$lib")"
      cp -L "$lib" "$st$lib"
    done
  fi
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$st/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$st/etc/group"
  printf '127.0.0.1 localhost\n::1 localhost\n' > "$st/etc/hosts"
  echo 'kernel-test' > "$st/etc/hostname"
  # the guest's server: one nginx process (no master), plain read/writev (no sendfile)
  cat > "$st/etc/nginx.conf" <<'EOF'
daemon off;
master_process off;
worker_processes 1;
user root;
pid /run/nginx.pid;
error_log stderr warn;
events { worker_connections 64; }
http {
  access_log off;
  sendfile off;
  default_type text/plain;
  server {
    listen 127.0.0.1:8080;
    root /www;
    location = /echo { default_type application/json; return 200 '{"query":"$args"}\n'; }
  }
}
EOF
  printf 'hello from the kernel matrix\n' > "$st/www/hello.txt"
  printf '<html><body>index</body></html>\n' > "$st/www/index.html"
  (cd "$st" && find . -mindepth 1 | LC_ALL=C sort | "$(kt_host_busybox)" cpio -o -H newc 2>/dev/null > "$out.tmp") \
    || { rm -rf "$st" "$out.tmp"; kt_die "cpio of the base initramfs failed"; }
  mv "$out.tmp" "$out"
  rm -rf "$st"
  # keep only the newest base image
  find "$KT_CACHE/initramfs" -name "base-$KT_ARCH-*.cpio" ! -name "base-$KT_ARCH-$key.cpio" -delete
  echo "$out"
}

# Appends a cpio of directory $2 to the base image $1 into $3 (the kernel unpacks concatenated
# archives in order, later files replacing earlier ones).
kt_overlay_initramfs() {
  local base=$1 dir=$2 out=$3 bb; bb=$(kt_host_busybox)
  cp "$base" "$out"
  (cd "$dir" && find . -mindepth 1 | LC_ALL=C sort | "$bb" cpio -o -H newc 2>/dev/null >> "$out")
}

# ---------------------------------------------------------------------------------------------
# qemu

kt_require_qemu() {
  if [[ $KT_ARCH == arm64 ]]; then
    command -v qemu-system-aarch64 >/dev/null || kt_die "qemu-system-aarch64 is missing (apt-get install qemu-system-arm)"
  else
    command -v qemu-system-x86_64 >/dev/null || kt_die "qemu-system-x86_64 is missing (apt-get install qemu-system-x86)"
  fi
}

# Boots KDIR's kernel with INITRD under TCG, serial console to LOG, bounded by TIMEOUT seconds.
# Extra qemu arguments follow. Returns qemu's (or timeout's: 124) status.
#
# CPU: "max" without CMPXCHG16B. QEMU 7.2's (Debian 12) TCG emulation of cmpxchg16b %gs:(...)
# corrupts RFLAGS now and then; 6.12 kernels use it in the SLUB fast path and die early in boot
# with "double fault" in kmem_cache_alloc_noprof/__kmalloc_noprof (about 1 boot in 3 with -smp 2,
# 1 in 6 with -smp 1 or thread=single). Without cx16 the kernel takes its locked fallback (0 in
# 22 boots); Bun does not need it. KT_CPU, KT_SMP, KT_MEM, KT_ACCEL override.
kt_boot() {
  local kdir=$1 initrd=$2 log=$3 tmo=$4; shift 4
  local console=ttyS0 board
  if [[ $KT_ARCH == arm64 ]]; then
    # arm64: the "virt" board (PL011 console ttyAMA0, virtio over PCI), a Cortex-A72-class CPU
    # (cheaper to emulate than "max", whose pointer authentication is slow under TCG)
    board=(qemu-system-aarch64 -machine virt -cpu "${KT_CPU:-cortex-a72}")
    console=ttyAMA0
  else
    board=(qemu-system-x86_64 -machine pc -cpu "${KT_CPU:-max,cx16=off}")
  fi
  local rc=0
  # never -enable-kvm: software emulation only
  timeout --kill-after=10 "$tmo" "${board[@]}" -accel "${KT_ACCEL:-tcg}" -smp "${KT_SMP:-2}" -m "${KT_MEM:-2048}" \
    -display none -monitor none -serial stdio -no-reboot \
    -kernel "$kdir/vmlinuz" -initrd "$initrd" \
    -append "console=$console panic=-1 oops=panic loglevel=4 mitigations=off rdinit=/init" \
    "$@" </dev/null >"$log" 2>&1 || rc=$?
  return $rc
}
