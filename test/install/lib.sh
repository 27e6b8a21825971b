# Shared by test/install/run.sh and test/install/release.sh (sourced): a minimal Debian 12
# rootfs (debootstrap minbase + what the tests need; no libelf1, zlib1g only because minbase has
# it) booted with systemd as PID 1 in systemd-nspawn, and TAP-like "ok - / not ok -" reporting.
# The container shares the host's network namespace (no --private-network), so a server on the
# host's 127.0.0.1 is reachable from inside it.
# shellcheck shell=bash disable=SC2034
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${EBPF_TRACER_TEST_CACHE:-/var/cache/ebpf-tracer-test}
# A rootfs of its own (not .../rootfs): checkouts from before the binary carried libelf and zlib
# build one with libelf1 at that path, and the two must not rebuild each other's.
ROOTFS="$CACHE/rootfs-minimal"
# Bump when the package list changes: an older cached rootfs is rebuilt. No libelf1 and nothing
# that pulls it in: the agent must run with glibc alone (zlib1g is part of minbase itself).
readonly ROOTFS_STAMP="bookworm minbase systemd systemd-sysv dbus curl python3 ca-certificates procps v2"
readonly PACKAGES=systemd,systemd-sysv,dbus,curl,python3,ca-certificates,procps
readonly MIRROR=${EBPF_TRACER_TEST_MIRROR:-http://deb.debian.org/debian}
MACHINE="ebpf-tracer-test-$$"
OUT=${EBPF_TRACER_TEST_OUT:-/tmp/ebpf-tracer-install-test}
NSPAWN_PID=""
LEADER=""
PASS=0
FAIL=0
KEEP=0


log() { printf '# %s\n' "$*"; }
ok() { PASS=$((PASS + 1)); printf 'ok - %s\n' "$*"; }
not_ok() { FAIL=$((FAIL + 1)); printf 'not ok - %s\n' "$*"; }
# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
  local what=$1
  shift
  if "$@"; then ok "$what"; else not_ok "$what"; fi
}
fatal() { printf 'Bail out! %s\n' "$*"; finish 1; }

in_ct() { nsenter -t "$LEADER" -a -- "$@"; }
sh_ct() { nsenter -t "$LEADER" -a -- /bin/bash -c "$1"; }
prop() { in_ct systemctl show -p "$1" --value ebpf-tracer; }
starts() { sh_ct "journalctl -u ebpf-tracer -o cat --no-pager | grep -c '^Started ' || true"; }
# shellcheck disable=SC2317 # called through wait_for
restarted() { test "$(prop NRestarts)" -ge 1; }
span_count() { sh_ct "cat /var/lib/ebpf-tracer/spans.jsonl 2>/dev/null | wc -l"; }

# wait_for SECONDS COMMAND...: polls until the command succeeds.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

preconditions() {
  [[ $(id -u) -eq 0 ]] || { echo "SKIP: needs root" >&2; exit 77; }
  local missing=()
  command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
  command -v debootstrap >/dev/null || [[ -f $ROOTFS/.stamp ]] || missing+=(debootstrap)
  command -v nsenter >/dev/null || missing+=(util-linux)
  if ((${#missing[@]})); then
    echo "SKIP: missing ${missing[*]} (apt-get install ${missing[*]})" >&2
    exit 77
  fi
  [[ -d /sys/kernel/tracing/events ]] || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
}

build_rootfs() {
  if [[ -f $ROOTFS/.stamp && $(cat "$ROOTFS/.stamp") == "$ROOTFS_STAMP" ]]; then return 0; fi
  log "building the container rootfs in $ROOTFS (debootstrap bookworm, once per machine)"
  mkdir -p "$CACHE"
  local tmp="$ROOTFS.tmp.$$"
  rm -rf "$tmp"
  if ! debootstrap --variant=minbase --include="$PACKAGES" bookworm "$tmp" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
    tail -20 "$CACHE/debootstrap.log" >&2
    rm -rf "$tmp"
    fatal "debootstrap failed (log: $CACHE/debootstrap.log)"
  fi
  # no getty on the console, no first-boot prompts, a fixed machine id
  rm -f "$tmp/etc/systemd/system/getty.target.wants/"* 2>/dev/null || true
  echo "ebpf-tracer-test" >"$tmp/etc/hostname"
  systemd-machine-id-setup --root="$tmp" >/dev/null 2>&1 || true
  printf '%s\n' "$ROOTFS_STAMP" >"$tmp/.stamp"
  rm -rf "$ROOTFS"
  mv "$tmp" "$ROOTFS"
}

# boot [EXTRA NSPAWN ARGS...]
boot() {
  mkdir -p "$OUT"
  log "booting $MACHINE (systemd-nspawn -b, volatile overlay of $ROOTFS)"
  systemd-nspawn -D "$ROOTFS" --volatile=overlay -b --register=no --keep-unit -M "$MACHINE" \
    --capability=CAP_BPF,CAP_PERFMON --system-call-filter='bpf perf_event_open' \
    --bind=/sys/kernel/tracing "$@" --console=passive >"$OUT/nspawn.log" 2>&1 &
  NSPAWN_PID=$!
  local deadline=$((SECONDS + 30)) p
  while [[ -z $LEADER ]]; do
    kill -0 "$NSPAWN_PID" 2>/dev/null || fatal "systemd-nspawn exited: $(tail -5 "$OUT/nspawn.log")"
    ((SECONDS < deadline)) || fatal "no container init after 30s"
    for p in $(pgrep -P "$NSPAWN_PID" || true); do
      [[ $(cat "/proc/$p/comm" 2>/dev/null) == systemd ]] && LEADER=$p
    done
    sleep 0.2
  done
  # Until the container's manager listens on its bus, systemctl answers nothing or "offline"
  # (an early nsenter can come before that; both seen in CI): ask again until the boot is
  # done (--wait covers "initializing"/"starting"), within the deadline.
  local state="" until=$((SECONDS + 60))
  while ((SECONDS < until)); do
    state=$(timeout 60 nsenter -t "$LEADER" -a -- systemctl is-system-running --wait 2>/dev/null || true)
    [[ $state == running || $state == degraded ]] && break
    sleep 0.5
  done
  [[ $state == running || $state == degraded ]] || fatal "container did not boot: is-system-running says '$state'"
  log "container up (leader pid $LEADER, state $state)"
}

finish() {
  local status=${1:-0}
  trap - EXIT
  if [[ -n $LEADER ]]; then
    in_ct journalctl --no-pager -o short-monotonic -u ebpf-tracer >"$OUT/journal-ebpf-tracer.txt" 2>/dev/null || true
  fi
  if ((KEEP)) && [[ -n $LEADER ]]; then
    log "container kept: nsenter -t $LEADER -a bash   (stop: kill $NSPAWN_PID)"
  elif [[ -n $NSPAWN_PID ]] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
    [[ -z $LEADER ]] || in_ct systemctl poweroff --no-block >/dev/null 2>&1 || true
    for _ in $(seq 1 40); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$NSPAWN_PID" 2>/dev/null && kill "$NSPAWN_PID" 2>/dev/null
    wait "$NSPAWN_PID" 2>/dev/null || true
  fi
  echo "$PASS passed, $FAIL failed"
  if ((status == 0 && FAIL > 0)); then status=1; fi
  exit "$status"
}

