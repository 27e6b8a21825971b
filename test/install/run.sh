#!/usr/bin/env bash
# install.sh and the systemd unit under a real systemd: boots a Debian 12 container with
# systemd-nspawn (systemd as PID 1; this host has none) and checks, inside it:
#   install.sh --binary → unit active, READY=1 sent, least-privilege capabilities in effect;
#   a curl to a server in the container → spans (exporter file:/var/lib/ebpf-tracer/spans.jsonl);
#   editing the config + systemctl reload → capture follows the new config;
#   re-running install.sh → nothing changed, not restarted; --upgrade → restarted exactly once;
#   exit status 69 → unit failed and not restarted (exit 1 → restarted);
#   systemd-analyze security score (printed, and written to $OUT/security.txt);
#   --uninstall → no unit, binary or timers, config kept; --uninstall --purge → config gone.
#
# Usage: test/install/run.sh [--binary PATH] [--keep]      (root; ~1 minute with a cached rootfs)
#   --binary PATH  the agent to install (default dist/ebpf-tracer)
#   --keep         leave the container running at the end (prints how to enter it)
# The rootfs is built once per machine with debootstrap (Debian archive) and cached under
# /var/cache/ebpf-tracer-test/rootfs-minimal (test/install/lib.sh); each run boots it with --volatile=overlay, so runs start
# from the same clean system. Prints "ok - ..." / "not ok - ..." per assertion and ends with
# "N passed, N failed"; exit 0 only when all passed. Needs: debootstrap, systemd-container.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=test/install/lib.sh
source "$REPO/test/install/lib.sh"
BINARY="$REPO/dist/ebpf-tracer"

while [[ $# -gt 0 ]]; do
  case $1 in
    --binary) BINARY=$(realpath "$2"); shift ;;
    --keep) KEEP=1 ;;
    *) echo "usage: $0 [--binary PATH] [--keep]" >&2; exit 2 ;;
  esac
  shift
done

# ---------------------------------------------------------------------------------------------
scenario() {
  local out rc pid1 inv1 pid2 inv2 n0 n1

  # 0. the host is minimal: the agent must not find libelf anywhere (it carries its own)
  check "container has no libelf1 package" sh_ct '! dpkg -s libelf1 >/dev/null 2>&1'
  check "container has no libelf.so.1 at all" sh_ct '! ldconfig -p | grep -q libelf.so && ! find / -xdev -name "libelf*.so*" 2>/dev/null | grep -q .'

  # Two demo servers, each its own unit: the agent selects by systemd_unit (cgroup), which holds
  # inside a container too (pids differ between the container's and the kernel's namespace).
  in_ct mkdir -p /srv/a /srv/b
  sh_ct 'echo hello-a > /srv/a/index.html; echo hello-b > /srv/b/index.html'
  in_ct systemd-run -q --unit=demo-a -p WorkingDirectory=/srv/a /usr/bin/python3 -m http.server 8080 --bind 127.0.0.1
  in_ct systemd-run -q --unit=demo-b -p WorkingDirectory=/srv/b /usr/bin/python3 -m http.server 8081 --bind 127.0.0.1
  wait_for 10 sh_ct 'curl -fs http://127.0.0.1:8080/ >/dev/null && curl -fs http://127.0.0.1:8081/ >/dev/null' || fatal "demo servers did not start"

  # 1. install with the flags; the config it writes is checked by the unit tests — here the
  #    test config is put in place first (install.sh keeps an existing config: tested too).
  in_ct mkdir -p /etc/traceable
  sh_ct 'umask 077; cat > /etc/traceable/ebpf-tracer-config.yaml' <<'EOF'
# test config: capture the demo-a unit's server side, spans to a file
exporter: file:/var/lib/ebpf-tracer/spans.jsonl
mode: ingress
service_name: demo
targets:
  - systemd_unit: demo-a.service
admin:
  address: 127.0.0.1:9464
EOF
  local args=(--binary /opt/bin/ebpf-tracer --endpoint collector.invalid:4318 --service-name demo --exe python3.11)
  out=$(in_ct /opt/src/install.sh "${args[@]}" 2>&1) && rc=0 || rc=$?
  printf '%s\n' "$out" >"$OUT/install-1.txt"
  check "install.sh --binary exits 0" test "$rc" -eq 0
  [[ $rc -eq 0 ]] || { printf '%s\n' "$out" | tail -30; fatal "install failed"; }
  check "unit is active" test "$(in_ct systemctl is-active ebpf-tracer || true)" = active
  check "unit is enabled" test "$(in_ct systemctl is-enabled ebpf-tracer || true)" = enabled
  check "READY=1 reached systemd (StatusText set by the agent)" grep -q "capturing" <<<"$(prop StatusText)"
  check "install.sh printed the status line" grep -q "status: ActiveState=active" <<<"$out"
  check "existing config kept, new one in .new with a notice" grep -q "NOTICE: /etc/traceable/ebpf-tracer-config.yaml exists and was kept" <<<"$out"
  check "config file mode 0600" test "$(in_ct stat -c %a /etc/traceable/ebpf-tracer-config.yaml)" = 600
  check ".new config has mode 0600 and the flags' values" sh_ct "test \"\$(stat -c %a /etc/traceable/ebpf-tracer-config.yaml.new)\" = 600 && grep -q 'endpoint: \"collector.invalid:4318\"' /etc/traceable/ebpf-tracer-config.yaml.new"
  pid1=$(prop MainPID)
  # least privilege: uid 0 but only the five capabilities (CAP_SYS_RESOURCE only where the
  # container has it), no CAP_SYS_ADMIN
  local capeff
  capeff=$(sh_ct "awk '/^CapEff/ {print \$2}' /proc/$pid1/status")
  check "agent has no CAP_SYS_ADMIN (CapEff $capeff)" test $((0x$capeff >> 21 & 1)) -eq 0
  check "agent has CAP_BPF and CAP_PERFMON" test $((0x$capeff >> 38 & 3)) -eq 3
  check "agent has nothing beyond BPF PERFMON SYS_RESOURCE SYS_PTRACE DAC_READ_SEARCH" test $((0x$capeff & ~(1 << 39 | 1 << 38 | 1 << 24 | 1 << 19 | 1 << 2))) -eq 0

  # 2. spans for a curl to the selected server
  in_ct curl -fs -o /dev/null http://127.0.0.1:8080/index.html
  if wait_for 15 sh_ct "grep -q '\"url.path\":\"/index.html\"' /var/lib/ebpf-tracer/spans.jsonl 2>/dev/null"; then
    ok "curl to demo-a yields a span"
  else
    not_ok "curl to demo-a yields a span (spans file has $(span_count) lines)"
  fi
  check "the span is a server span" sh_ct "grep '\"url.path\":\"/index.html\"' /var/lib/ebpf-tracer/spans.jsonl | grep -q '\"kind\":\"server\"'"
  in_ct curl -s -o /dev/null http://127.0.0.1:8081/not-selected-1
  sleep 2
  check "demo-b is not captured before the reload" sh_ct "! grep -q not-selected-1 /var/lib/ebpf-tracer/spans.jsonl"
  check "ebpf-tracer status exits 0 (healthy)" in_ct /usr/local/bin/ebpf-tracer status
  in_ct /usr/local/bin/ebpf-tracer status >"$OUT/status.txt" 2>&1 || true

  # 3. edit the config, systemctl reload → capture follows it (demo-b instead of demo-a)
  sh_ct "sed -i 's/demo-a.service/demo-b.service/' /etc/traceable/ebpf-tracer-config.yaml"
  n0=$(starts)
  in_ct systemctl reload ebpf-tracer
  sleep 2
  in_ct curl -s -o /dev/null http://127.0.0.1:8081/after-reload
  in_ct curl -s -o /dev/null http://127.0.0.1:8080/after-reload-a
  if wait_for 15 sh_ct "grep -q '\"url.path\":\"/after-reload\"' /var/lib/ebpf-tracer/spans.jsonl"; then
    ok "after reload, demo-b is captured"
  else
    not_ok "after reload, demo-b is captured (needs SIGHUP reload in the agent)"
  fi
  check "after reload, demo-a is no longer captured" sh_ct "! grep -q after-reload-a /var/lib/ebpf-tracer/spans.jsonl"
  check "reload did not restart the service" test "$(prop MainPID)" = "$pid1"
  check "unit active after reload" test "$(in_ct systemctl is-active ebpf-tracer || true)" = active

  # 4. re-run with the same inputs: nothing changes, nothing restarts
  inv1=$(prop InvocationID)
  n0=$(starts)
  out=$(in_ct /opt/src/install.sh "${args[@]}" 2>&1) && rc=0 || rc=$?
  printf '%s\n' "$out" >"$OUT/install-2.txt"
  check "re-run exits 0" test "$rc" -eq 0
  check "re-run says nothing to do" grep -q "nothing to do" <<<"$out"
  check "re-run did not restart (same MainPID and InvocationID)" test "$(prop MainPID)/$(prop InvocationID)" = "$pid1/$inv1"
  check "re-run started nothing (journal)" test "$(starts)" = "$n0"

  # 5. --upgrade with a different binary: atomic swap, exactly one restart
  in_ct cp /opt/bin/ebpf-tracer /usr/local/lib/ebpf-tracer-real
  sh_ct 'printf "#!/bin/sh\n# upgrade test build\nexec /usr/local/lib/ebpf-tracer-real \"\$@\"\n" > /root/ebpf-tracer-v2; chmod 755 /root/ebpf-tracer-v2'
  n0=$(starts)
  out=$(in_ct /opt/src/install.sh --upgrade --binary /root/ebpf-tracer-v2 2>&1) && rc=0 || rc=$?
  printf '%s\n' "$out" >"$OUT/install-upgrade.txt"
  check "--upgrade exits 0" test "$rc" -eq 0
  check "--upgrade installed the new binary" sh_ct 'grep -q "upgrade test build" /usr/local/bin/ebpf-tracer'
  n1=$(starts)
  check "--upgrade restarted exactly once (starts $n0 → $n1)" test $((n1 - n0)) -eq 1
  inv2=$(prop InvocationID)
  pid2=$(prop MainPID)
  check "--upgrade: new invocation, active" test "$inv2" != "$inv1" -a "$(in_ct systemctl is-active ebpf-tracer || true)" = active
  check "--upgrade left no temporary files" test "$(sh_ct 'ls -A /usr/local/bin | grep -c ebpf-tracer')" -eq 1
  out=$(in_ct /opt/src/install.sh --upgrade --binary /root/ebpf-tracer-v2 2>&1) || true
  check "--upgrade again: no restart" test "$(prop MainPID)" = "$pid2"

  # 6. exit status 69 (kernel cannot support capture) → failed, not restarted; exit 1 → restarted
  in_ct mkdir -p /etc/systemd/system/ebpf-tracer.service.d
  sh_ct 'cat > /etc/systemd/system/ebpf-tracer.service.d/99-test-exit.conf' <<'EOF'
[Service]
ExecStart=
ExecStart=/bin/sh -c 'echo "ebpf-tracer: capture cannot work on this host (simulated)" >&2; exit 69'
RestartSec=1s
EOF
  in_ct systemctl daemon-reload
  in_ct systemctl restart ebpf-tracer 2>/dev/null || true
  sleep 4 # > RestartSec: a restart would have happened by now
  check "exit 69: unit failed" test "$(prop ActiveState)" = failed
  check "exit 69: main status 69" test "$(prop ExecMainStatus)" = 69
  check "exit 69: not restarted (NRestarts 0)" test "$(prop NRestarts)" = 0
  sh_ct "sed -i 's/exit 69/exit 1/' /etc/systemd/system/ebpf-tracer.service.d/99-test-exit.conf"
  in_ct systemctl daemon-reload
  in_ct systemctl reset-failed ebpf-tracer
  in_ct systemctl restart ebpf-tracer 2>/dev/null || true
  if wait_for 10 restarted; then ok "exit 1: restarted (Restart=on-failure)"; else not_ok "exit 1: restarted (NRestarts $(prop NRestarts))"; fi
  in_ct rm -f /etc/systemd/system/ebpf-tracer.service.d/99-test-exit.conf
  in_ct systemctl daemon-reload
  in_ct systemctl reset-failed ebpf-tracer 2>/dev/null || true
  in_ct systemctl restart ebpf-tracer
  check "back to active without the test drop-in" test "$(in_ct systemctl is-active ebpf-tracer || true)" = active

  # 7. exposure score
  in_ct systemd-analyze security ebpf-tracer --no-pager >"$OUT/security.txt" 2>&1 || true
  local score
  score=$(grep -o 'Overall exposure level for ebpf-tracer.service: [0-9.]* [A-Z]*' "$OUT/security.txt" || true)
  log "systemd-analyze security: ${score:-unknown}"
  check "systemd-analyze security exposure below 5.0 (${score##*: })" awk -v s="${score##*: }" 'BEGIN { split(s, a, " "); exit !(a[1] != "" && a[1] + 0 < 5.0) }'

  # 8. uninstall: no unit, binary or timers; config kept. Then --purge.
  out=$(in_ct /opt/src/install.sh --uninstall --yes 2>&1) && rc=0 || rc=$?
  printf '%s\n' "$out" >"$OUT/uninstall.txt"
  check "--uninstall exits 0" test "$rc" -eq 0
  check "--uninstall: no unit file" sh_ct '! test -e /etc/systemd/system/ebpf-tracer.service && ! test -e /etc/systemd/system/multi-user.target.wants/ebpf-tracer.service'
  check "--uninstall: systemd no longer knows the unit" test "$(prop LoadState)" = not-found
  check "--uninstall: no binary" sh_ct '! test -e /usr/local/bin/ebpf-tracer'
  check "--uninstall: no timers" sh_ct '! systemctl list-timers --all --no-pager | grep -q ebpf-tracer && ! ls /etc/systemd/system/*ebpf-tracer*.timer >/dev/null 2>&1'
  check "--uninstall: process gone" sh_ct '! pgrep -x "ebpf-tracer|ebpf-tracer-rea" >/dev/null'
  check "--uninstall: config and state kept" sh_ct 'test -f /etc/traceable/ebpf-tracer-config.yaml && test -d /var/lib/ebpf-tracer'
  out=$(in_ct /opt/src/install.sh --uninstall --purge --yes 2>&1) && rc=0 || rc=$?
  check "--uninstall --purge exits 0" test "$rc" -eq 0
  check "--purge: config, state and logs gone" sh_ct '! test -e /etc/traceable/ebpf-tracer-config.yaml && ! test -e /var/lib/ebpf-tracer && ! test -e /var/log/ebpf-tracer'
}

main() {
  preconditions
  [[ -x $BINARY ]] || fatal "no agent binary at $BINARY (bun run build)"
  trap 'finish 1' EXIT
  trap 'printf "Bail out! line %s failed: %s\n" "$LINENO" "$BASH_COMMAND"' ERR
  build_rootfs
  boot --bind-ro="$REPO:/opt/src" --bind-ro="$BINARY:/opt/bin/ebpf-tracer"
  scenario
  finish 0
}

main
