#!/usr/bin/env bash
# Boots one Debian kernel from the archive under qemu (TCG, never KVM) with dist/ebpf-tracer,
# busybox httpd and busybox wget in an initramfs, runs a capture and checks the spans.
#
#   test/kernels/run.sh KERNEL [MODE]
#   test/kernels/run.sh KERNEL dump-btf [DEST]
#
# KERNEL  SUITE (its linux-image-cloud-amd64), SUITE/PACKAGE (meta or versioned linux-image
#         package, e.g. bookworm/linux-image-amd64, bullseye/linux-image-5.10.0-32-cloud-amd64)
#         or a path to a linux-image .deb. SUITE is any Debian suite on deb.debian.org
#         (bullseye, bookworm, bookworm-backports, trixie, ...). A trailing "@arm64"
#         (bookworm@arm64) boots the arm64 kernel under qemu-system-aarch64 with
#         dist/ebpf-tracer-linux-aarch64 (scripts/build.sh --arch aarch64).
# MODE    default (tracepoints + ring buffer, kernel BTF), or features joined by "+":
#           kprobes   enable_tracepoints: false
#           perf      bpf.buffer: perf
#           bundled   /sys/kernel/btf hidden: the BTF bundled in the binary must be used
#           download  /sys/kernel/btf hidden, btf.download_url pointing at a server on the host's
#                     loopback (10.0.2.2 in the guest) serving <release>.btf.tar.xz made from
#                     the kernel's own BTF (dumped out of a first boot, cached)
# dump-btf  boots the kernel once and copies its /sys/kernel/btf/vmlinux out through a virtio
#           disk to $KT_CACHE/btf/<release>.btf (and to DEST when given), checking its sha256.
#
# Prints "RESULT kernel=<release> mode=<mode> status=pass|fail spans=N ... [why=<reasons>]" last and
# exits 0 on pass, 1 on fail, 2 when it could not run. Downloads and extracted kernels are cached
# in $KT_CACHE (default /var/cache/ebpf-tracer-test/kernels). KT_VERBOSE=1 echoes the serial
# console; the log of the last run is kept at $KT_CACHE/logs/<release>--<mode>.log.
set -euo pipefail
spec=${1:-}
if [[ "$spec" == *@arm64 ]]; then export KT_ARCH=arm64; spec=${spec%@arm64}; fi
source "$(dirname "$0")/lib.sh"

[[ -n "$spec" ]] || { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
mode=${2:-default}
KT_TIMEOUT=${KT_TIMEOUT:-300}
REQUESTS=${KT_REQUESTS:-"/hello.txt /index.html /echo?x=1 /missing"}

kt_require_qemu
command -v bun >/dev/null || kt_die "bun is needed to check the spans"
mkdir -p "$KT_CACHE/logs" "$KT_CACHE/btf"

t0=$SECONDS
# one preparer at a time (downloads, extraction, the base image, BTF dumps); VMs run unlocked
exec 9>"$KT_CACHE/.lock"
flock 9
deb=$(kt_fetch_kernel "$spec")
kdir=$(kt_prepare_kernel "$deb")
release=$(cat "$kdir/release")
package=$(cat "$kdir/package")
base=$(kt_base_initramfs)
kt_log "kernel $release ($package) prepared in $((SECONDS - t0))s"

work=$(mktemp -d "${TMPDIR:-/tmp}/kt-run.XXXXXX")
server_pid=""
cleanup() {
  [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# overlay: files that differ per run, appended to the base initramfs
overlay() { # ACTION -> fills $work/ov
  local ov="$work/ov"
  mkdir -p "$ov/modules" "$ov/etc"
  cp "$KT_DIR/init" "$ov/init"; chmod 755 "$ov/init"
  local m
  while read -r m; do [[ -n "$m" ]] && cp "$kdir/modules/$m" "$ov/modules/"; done < "$kdir/modules/order"
  cp "$kdir/modules/order" "$ov/modules/order"
  kt_os_release "$spec" "$package" > "$ov/etc/os-release"
  {
    echo "KT_ACTION=$1"
    echo "KT_REQUESTS='$REQUESTS'"
  } > "$ov/test.env"
  : > "$ov/config.yaml"
}

boot() { # LOG [qemu args...] -> status of the VM
  local log=$1; shift
  kt_overlay_initramfs "$base" "$work/ov" "$work/initrd.cpio"
  local tb=$SECONDS rc=0
  if [[ "${KT_VERBOSE:-0}" == 1 ]]; then
    ( tail -n +1 -F "$log" 2>/dev/null | sed 's/^/[guest] /' >&2 ) &
    local tailer=$!
  fi
  kt_boot "$kdir" "$work/initrd.cpio" "$log" "$KT_TIMEOUT" "$@" || rc=$?
  [[ -n "${tailer:-}" ]] && { sleep 0.5; kill "$tailer" 2>/dev/null || true; }
  boot_seconds=$((SECONDS - tb))
  return $rc
}

# Boots the kernel with a dump disk and stores its BTF in $KT_CACHE/btf/<release>.btf.
dump_btf() {
  local out="$KT_CACHE/btf/$release.btf"
  if [[ -s "$out" ]]; then echo "$out"; return; fi
  overlay dump-btf
  truncate -s 64M "$work/dump.img"
  local log="$KT_CACHE/logs/$release--dump-btf.log" rc=0
  boot "$log" -drive "file=$work/dump.img,if=virtio,format=raw" -nic none || rc=$?
  local res size sum
  res=$(grep -a '^KT RESULT' "$log" | tail -n 1 || true)
  [[ "$res" == *status=pass* ]] || { tail -n 30 "$log" >&2; kt_die "BTF dump of $release failed (qemu status $rc): ${res:-no RESULT line}"; }
  size=$(grep -a '^KT kernel-btf size=' "$log" | sed 's/.*size=\([0-9]*\).*/\1/')
  sum=$(grep -a '^KT kernel-btf size=' "$log" | sed 's/.*sha256=\([0-9a-f]*\).*/\1/')
  head -c "$size" "$work/dump.img" > "$out.tmp"
  [[ "$(sha256sum < "$out.tmp" | cut -d' ' -f1)" == "$sum" ]] || { rm -f "$out.tmp"; kt_die "dumped BTF of $release does not match the guest's sha256"; }
  mv "$out.tmp" "$out"
  kt_log "dumped /sys/kernel/btf/vmlinux of $release ($size bytes, ${boot_seconds}s) to $out"
  rm -rf "$work/ov" "$work/dump.img"
  echo "$out"
}

if [[ "$mode" == dump-btf ]]; then
  out=$(dump_btf)
  if [[ -n "${3:-}" ]]; then mkdir -p "$(dirname "$3")"; cp "$out" "$3"; kt_log "copied to $3"; fi
  echo "$out"
  exit 0
fi

# ---- capture run
features=" ${mode//+/ } "
for f in $features; do
  case "$f" in default|kprobes|perf|bundled|download) ;; *) kt_die "unknown mode feature: $f (default, kprobes, perf, bundled, download)" ;; esac
done
[[ "$features" == *" bundled "* && "$features" == *" download "* ]] && kt_die "bundled and download exclude each other"

qemu_net=(-nic none)
btf_yaml=""
if [[ "$features" == *" download "* ]]; then
  full=$(dump_btf)
  # a BTFHub-style archive: <release>.btf.tar.xz holding <release>.btf, filed under every
  # directory the agent may try (debian/<version>/<arch> and the codename)
  srv="$work/srv"
  osv=$(kt_os_release "$spec" "$package" | sed -n 's/^VERSION_ID="\(.*\)"/\1/p')
  code=$(kt_os_release "$spec" "$package" | sed -n 's/^VERSION_CODENAME=//p')
  mkdir -p "$work/tar"
  cp "$full" "$work/tar/$release.btf"
  tar -C "$work/tar" -cJf "$work/$release.btf.tar.xz" "$release.btf"
  for d in "$osv" "$code"; do
    [[ -n "$d" ]] || continue
    btf_arch=x86_64; [[ $KT_ARCH == arm64 ]] && btf_arch=arm64
    mkdir -p "$srv/debian/$d/$btf_arch"
    cp "$work/$release.btf.tar.xz" "$srv/debian/$d/$btf_arch/"
  done
  bb=$(kt_host_busybox)
  for try in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 30000))
    "$bb" httpd -f -vv -p "127.0.0.1:$port" -h "$srv" 2>"$work/srv.log" &
    server_pid=$!
    sleep 0.3
    kill -0 "$server_pid" 2>/dev/null && break
    server_pid=""
  done
  [[ -n "$server_pid" ]] || kt_die "cannot start the BTF download server on the host's loopback"
  kt_log "serving $release.btf.tar.xz ($(stat -c %s "$work/$release.btf.tar.xz") bytes) on 127.0.0.1:$port"
  btf_yaml="btf:
  download_url: \"http://10.0.2.2:$port/{id}/{version_id}/{arch}/{release}.btf.tar.xz\"
  download_storage_path: /var/lib/ebpf-tracer/btf
  download_timeout: 60s"
  qemu_net=(-netdev user,id=n0 -device virtio-net-pci,netdev=n0)
elif [[ "$features" == *" bundled "* ]]; then
  # no download: only the bundled file can be used
  btf_yaml='btf:
  download_url: ""'
fi

overlay capture
{
  echo "# kernel matrix: mode $mode"
  [[ "$features" == *" kprobes "* ]] && echo "enable_tracepoints: false"
  [[ "$features" == *" perf "* ]] && printf 'bpf:\n  buffer: perf\n'
  [[ -n "$btf_yaml" ]] && echo "$btf_yaml"
  true
} > "$work/ov/config.yaml"
if [[ "$features" == *" bundled "* || "$features" == *" download "* ]]; then echo "KT_HIDE_BTF=1" >> "$work/ov/test.env"; fi
[[ "$features" == *" download "* ]] && echo "KT_NET=1" >> "$work/ov/test.env"

flock -u 9
log="$KT_CACHE/logs/$release--$mode.log"
kt_log "booting $release, mode $mode (timeout ${KT_TIMEOUT}s)"
qrc=0
boot "$log" "${qemu_net[@]}" || qrc=$?
verdict=$(bun "$KT_DIR/check.ts" "$log" --mode "$mode" --requests "$REQUESTS") && ok=1 || ok=0
head=${verdict%% why=*}
why=""
[[ "$verdict" == *" why="* ]] && why=${verdict#* why=}
if [[ $qrc == 124 ]]; then why="qemu timed out after ${KT_TIMEOUT}s${why:+; $why}"; ok=0; head="fail ${head#* }"; fi
if [[ "$features" == *" download "* && $ok == 1 ]] && ! grep -q 'btf.tar.xz' "$work/srv.log" 2>/dev/null; then
  why="the host's BTF server logged no download"; ok=0; head="fail ${head#* }"
fi
agent_up=$(grep -a '^KT agent-ready' "$log" | sed 's/.*uptime=//' || true)
agent_t0=$(grep -a '^KT agent-start' "$log" | sed 's/.*uptime=//' || true)
startup=$(awk -v a="$agent_t0" -v b="$agent_up" 'BEGIN { if (a != "" && b != "") printf "%.1f", b - a; else print "?" }')
if [[ $ok != 1 ]]; then
  kt_log "FAILED: $why"
  kt_log "last lines of $log:"
  grep -av '^KT span ' "$log" | tail -n 40 | sed 's/^/    /' >&2
fi
echo "RESULT kernel=$release mode=$mode status=${head%% *} ${head#* } vm_seconds=$boot_seconds agent_start_seconds=$startup log=$log${why:+ why=$why}"
[[ $ok == 1 ]]
