/**
 * The service-facing modules: the admin endpoint (admin-server.ts), `ebpf-tracer status`
 * (status-command.ts), `ebpf-tracer config validate` (config-validate-command.ts) and sd_notify
 * through systemd-notify (sd-notify.ts), each against real sockets and files.
 */
import { afterAll, afterEach, beforeEach, describe, expect, spyOn, test } from "bun:test";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { agentStatusProvider, isGauge, parseAddress, renderMetrics, snakeCase, startAdminServer, type StatusProvider } from "../../src/cli/admin-server.ts";
import { connectUrl, formatStatus, statusCommand } from "../../src/cli/status-command.ts";
import { configValidateCommand } from "../../src/cli/config-validate-command.ts";
import { notifyEnabled, notifyReady, notifyReloading, notifyStatus, sdNotify, setNotifyBinaryForTest, watchdogIntervalMs } from "../../src/cli/sd-notify.ts";

const dir = mkdtempSync(join(tmpdir(), "admin-server-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function provider(over: Partial<StatusProvider> = {}): StatusProvider & { healthy: boolean } {
  const p: StatusProvider & { healthy: boolean } = {
    healthy: true,
    health(): { ok: boolean; reasons: string[] } {
      return p.healthy ? { ok: true, reasons: [] } : { ok: false, reasons: ["exporter: collector unreachable for 120s", "no process selected"] };
    },
    counters() {
      return { SpansWritten: 12, EventLost: 0, OpenConnections: 3, KprobeEventMaxQueueSizeTillNow: 4096, 'ProbeEntries{syscall="read"}': 7 };
    },
    status() {
      return { version: "0.1.0", uptime_seconds: 3725, btf_source: "kernel", attach_mode: "tracepoints", selected_processes: [{ pid: 42, exe: "nginx" }], exporter: { kind: "otlp", state: "ok" } };
    },
    ...over,
  };
  return p;
}

/** Captures what a function writes to stdout/stderr. */
async function captureOutput<T>(fn: () => T | Promise<T>): Promise<{ result: T; out: string; err: string }> {
  let out = "";
  let err = "";
  const o = spyOn(process.stdout, "write").mockImplementation(((s: string | Uint8Array) => ((out += String(s)), true)) as never);
  const e = spyOn(process.stderr, "write").mockImplementation(((s: string | Uint8Array) => ((err += String(s)), true)) as never);
  try {
    const result = await fn();
    return { result, out, err };
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}

describe("admin endpoint", () => {
  const p = provider();
  const srv = startAdminServer("127.0.0.1:0", p);
  afterAll(() => srv.stop());
  beforeEach(() => (p.healthy = true));

  test("url carries the real port", () => {
    expect(srv.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(srv.url.endsWith(":0")).toBe(false);
  });

  test("/healthz: 200 ok, or 503 with one reason per line", async () => {
    let r = await fetch(`${srv.url}/healthz`);
    expect(r.status).toBe(200);
    expect(await r.text()).toBe("ok\n");
    p.healthy = false;
    r = await fetch(`${srv.url}/healthz`);
    expect(r.status).toBe(503);
    expect(await r.text()).toBe("unhealthy\nexporter: collector unreachable for 120s\nno process selected\n");
  });

  test("/metrics: Prometheus text with HELP/TYPE, counters _total, gauges plain, labels kept, process CPU/RSS", async () => {
    const r = await fetch(`${srv.url}/metrics`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toStartWith("text/plain; version=0.0.4");
    const body = await r.text();
    expect(body).toContain("# HELP ebpf_tracer_spans_written_total SpansWritten from the agent's stats line\n# TYPE ebpf_tracer_spans_written_total counter\nebpf_tracer_spans_written_total 12\n");
    expect(body).toContain("# TYPE ebpf_tracer_open_connections gauge\nebpf_tracer_open_connections 3\n");
    expect(body).toContain("ebpf_tracer_kprobe_event_max_queue_size_till_now 4096\n");
    expect(body).toContain('ebpf_tracer_probe_entries_total{syscall="read"} 7\n');
    expect(body).toContain("ebpf_tracer_healthy 1\n");
    const rss = Number(/^ebpf_tracer_process_resident_memory_bytes (\d+)$/m.exec(body)?.[1]);
    expect(rss).toBeGreaterThan(1024 * 1024);
    const cpu = Number(/^ebpf_tracer_process_cpu_seconds_total ([\d.e-]+)$/m.exec(body)?.[1]);
    expect(cpu).toBeGreaterThan(0);
    const start = Number(/^ebpf_tracer_process_start_time_seconds ([\d.]+)$/m.exec(body)?.[1]);
    expect(Math.abs(start - (Date.now() / 1000 - process.uptime()))).toBeLessThan(5);
    // every sample line belongs to a family declared just before it, and names are valid
    let current = "";
    for (const line of body.trimEnd().split("\n")) {
      const t = /^# TYPE (\S+) (counter|gauge)$/.exec(line);
      if (t) current = t[1]!;
      else if (!line.startsWith("# HELP ")) {
        expect(line).toMatch(/^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? \S+$/);
        expect(line.split(/[{ ]/)[0]).toBe(current);
      }
    }
  });

  test("/status: the provider's JSON plus healthy and reasons", async () => {
    const r = await fetch(`${srv.url}/status`);
    expect(r.headers.get("content-type")).toBe("application/json");
    expect(await r.json()).toEqual({ ...p.status(), healthy: true, reasons: [] });
  });

  test("unknown path 404, POST 405, HEAD answered, a throwing provider 500 and the server stays up", async () => {
    expect((await fetch(`${srv.url}/nope`)).status).toBe(404);
    const post = await fetch(`${srv.url}/healthz`, { method: "POST" });
    expect(post.status).toBe(405);
    expect(post.headers.get("allow")).toBe("GET, HEAD");
    expect((await fetch(`${srv.url}/healthz`, { method: "HEAD" })).status).toBe(200);
    const bad = startAdminServer("127.0.0.1:0", provider({ counters: () => { throw new Error("boom"); } }));
    try {
      const r = await fetch(`${bad.url}/metrics`);
      expect(r.status).toBe(500);
      expect(await r.text()).toContain("boom");
      expect((await fetch(`${bad.url}/healthz`)).status).toBe(200);
    } finally {
      bad.stop();
    }
  });

  test("an address in use is an IO error naming it; a malformed one a config error", () => {
    const port = new URL(srv.url).port;
    expect(() => startAdminServer(`127.0.0.1:${port}`, provider())).toThrow(/cannot listen on 127\.0\.0\.1:\d+/);
    expect(() => startAdminServer("127.0.0.1", provider())).toThrow(/admin\.address.*HOST:PORT/);
    expect(() => startAdminServer("127.0.0.1:99999", provider())).toThrow(/admin\.address/);
  });

  test("stop() closes the port", async () => {
    const s = startAdminServer("127.0.0.1:0", provider());
    const url = s.url;
    s.stop();
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
  });
});

describe("agentStatusProvider", () => {
  function fakeAgent(stats: Record<string, number>) {
    return {
      startedAt: 1_000_000,
      stats: () => ({ ...stats }),
      kernelCounters: () => ({ probes: { read: [5, 4] as [number, number], write: [0, 0] as [number, number] } }),
      selector: { selected: () => [{ pid: 7, name: "nginx", exe: "/usr/sbin/nginx", mode: "ingress" }] },
      kernel: { attachMode: "tracepoints", buffer: "ringbuf", libbpfVersion: "v1.1", attached: ["a", "b"] },
      currentConfig: { exporter: "otlp", agent_config: { reporting: { endpoint: "c:4318" } } },
    };
  }

  test("status, counters with probe labels, and exporter health over time", () => {
    let t = 1_000_000 + 65_000;
    const stats = { ExportRequestsOk: 0, ExportErrorsNetwork: 0, SpansQueued: 3 };
    const a = fakeAgent(stats);
    a.stats = () => ({ ...stats });
    const p = agentStatusProvider(a, { version: "0.1.0", btfSource: "kernel", now: () => t, exporterFailingAfterMs: 60_000 });
    expect(p.status()).toMatchObject({
      version: "0.1.0", uptime_seconds: 65, btf_source: "kernel", attach_mode: "tracepoints", buffer: "ringbuf", probes_attached: 2,
      selected_processes: [{ pid: 7, name: "nginx", exe: "/usr/sbin/nginx", mode: "ingress" }],
      exporter: { kind: "otlp", endpoint: "c:4318", state: "idle", SpansQueued: 3 },
    });
    expect(p.counters()).toMatchObject({ SelectedProcesses: 1, 'ProbeEntries{syscall="read"}': 5, 'ProbeExits{syscall="read"}': 4 });
    expect(p.health()).toEqual({ ok: true, reasons: [] });
    stats.ExportErrorsNetwork = 2; // failures start
    t += 1000;
    expect(p.health().ok).toBe(true);
    t += 61_000; // still no success
    expect(p.health()).toEqual({ ok: false, reasons: ["exporter: every export failed for 61s (otlp)"] });
    expect((p.status().exporter as Record<string, unknown>).state).toBe("failing");
    stats.ExportRequestsOk = 1; // one success clears it
    t += 1000;
    expect(p.health().ok).toBe(true);
    expect((p.status().exporter as Record<string, unknown>).state).toBe("ok");
  });

  test("status says whether connections are shed, why, and the shedding counters", () => {
    let why: "budget" | "behind" | "rate_limit" | undefined;
    const a = { ...fakeAgent({ SamplingRatio: 1, ShedConnections: 0, ShedRequestsEstimated: 0, ReadmittedConnections: 0, FallingBehind: 0 }), budget: { shedReason: () => why } };
    const p = agentStatusProvider(a, { version: "t", btfSource: "kernel" });
    expect(p.status().sampling).toEqual({ ratio: 1, shedding: "no", ShedConnections: 0, ShedRequestsEstimated: 0, ReadmittedConnections: 0, FallingBehind: 0 });
    why = "behind";
    expect((p.status().sampling as Record<string, unknown>).shedding).toBe("falling behind the kernel's events");
    why = "budget";
    expect((p.status().sampling as Record<string, unknown>).shedding).toBe("over the overhead budget");
    why = "rate_limit";
    expect((p.status().sampling as Record<string, unknown>).shedding).toBe("a target's max_spans_per_second");
  });
});

describe("metric naming", () => {
  test("snake_case and gauge detection", () => {
    expect(snakeCase("KprobeEventMaxQueueSizeTillNow")).toBe("kprobe_event_max_queue_size_till_now");
    expect(snakeCase("ExportErrorsHttp4xx")).toBe("export_errors_http4xx");
    expect(snakeCase("HTTPRequests")).toBe("http_requests");
    expect(snakeCase("spans.sent-ok")).toBe("spans_sent_ok");
    expect(isGauge("SpoolBytes")).toBe(true);
    expect(isGauge("TruncatedBytes")).toBe(false);
    expect(isGauge("SpansQueued")).toBe(true);
    expect(isGauge("TotalRequestsSent")).toBe(false);
    expect(isGauge("SelectedProcesses")).toBe(true);
  });

  test("NaN and infinities use Prometheus spellings", () => {
    const body = renderMetrics({ A: NaN, OpenB: Infinity }, false, { cpuSeconds: 0, rssBytes: 0, startTimeSeconds: 0 });
    expect(body).toContain("ebpf_tracer_a_total NaN\n");
    expect(body).toContain("ebpf_tracer_open_b +Inf\n");
    expect(body).toContain("ebpf_tracer_healthy 0\n");
  });

  test("addresses", () => {
    expect(parseAddress("127.0.0.1:9464")).toEqual({ hostname: "127.0.0.1", port: 9464 });
    expect(parseAddress("[::1]:9464")).toEqual({ hostname: "::1", port: 9464 });
    expect(parseAddress(":9464")).toEqual({ hostname: "0.0.0.0", port: 9464 });
    expect(connectUrl("0.0.0.0:9464")).toBe("http://127.0.0.1:9464");
    expect(connectUrl("[::]:1")).toBe("http://[::1]:1");
    expect(connectUrl(":80")).toBe("http://127.0.0.1:80");
  });
});

describe("ebpf-tracer status", () => {
  test("healthy: exit 0, readable lines", async () => {
    const s = startAdminServer("127.0.0.1:0", provider());
    try {
      const { result, out } = await captureOutput(() => statusCommand(s.url.replace("http://", "")));
      expect(result).toBe(0);
      expect(out).toStartWith("ebpf-tracer: running, healthy\n");
      expect(out).toMatch(/^version: +0\.1\.0$/m);
      expect(out).toMatch(/^uptime: +1h 2m 5s$/m);
      expect(out).toMatch(/^exporter:\n  kind: +otlp\n  state: +ok$/m);
      expect(out).toContain('selected_processes:\n  - {"pid":42,"exe":"nginx"}');
    } finally {
      s.stop();
    }
  });

  test("degraded: exit 1 with the reasons", async () => {
    const p = provider();
    p.healthy = false;
    const s = startAdminServer("127.0.0.1:0", p);
    try {
      const { result, out } = await captureOutput(() => statusCommand(s.url.replace("http://", "")));
      expect(result).toBe(1);
      expect(out).toStartWith("ebpf-tracer: running, DEGRADED (503)\n  ! exporter: collector unreachable for 120s\n  ! no process selected\n");
    } finally {
      s.stop();
    }
  });

  test("nothing listening: exit 3", async () => {
    const s = startAdminServer("127.0.0.1:0", provider());
    const addr = s.url.replace("http://", "");
    s.stop();
    const { result, out } = await captureOutput(() => statusCommand(addr));
    expect(result).toBe(3);
    expect(out).toContain("not running");
  });

  test("something that accepts but never answers: exit 3 after the timeout", async () => {
    const hang = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const { result, out } = await captureOutput(() => statusCommand(`127.0.0.1:${hang.port}`, 300));
      expect(result).toBe(3);
      expect(out).toContain("no answer");
    } finally {
      hang.stop(true);
    }
  });

  test("formatStatus aligns keys and shows empty values", () => {
    expect(formatStatus({ a: 1, long_key: [], e: "", n: { x: true } })).toBe('a:        1\nlong_key: (none)\ne:        ""\nn:\n  x: true\n');
  });
});

describe("ebpf-tracer config validate", () => {
  test("a good file: ok, exit 0, warnings on stderr", async () => {
    const f = join(dir, "good.yaml");
    writeFileSync(f, "exporter: stdout\ncapture:\n  exe: [nginx]\n");
    const { result, out, err } = await captureOutput(() => configValidateCommand(f));
    expect(result).toBe(0);
    expect(out).toBe(`ok: ${f}\n`);
    expect(err).toBe("");
    writeFileSync(f, "exporter: otlp\nadmin:\n  address: 0.0.0.0:9464\n  allow_remote: true\n  bearer_token: 0123456789abcdef0123\n");
    const w = await captureOutput(() => configValidateCommand(f));
    expect(w.result).toBe(0);
    expect(w.err).toContain("agent_config.reporting.endpoint is empty");
    expect(w.err).toContain("nothing is selected");
    expect(w.err).toContain("not loopback");
  });

  test("a non-loopback admin address without opt-in and token: exit 78 naming the key", async () => {
    const f = join(dir, "remote.yaml");
    writeFileSync(f, "admin:\n  address: 0.0.0.0:9464\n");
    let r = await captureOutput(() => configValidateCommand(f));
    expect(r.result).toBe(78);
    expect(r.err).toContain(`${f}:2: key "admin.address": 0.0.0.0:9464 is not a loopback address`);
    writeFileSync(f, "admin:\n  address: 0.0.0.0:9464\n  allow_remote: true\n");
    r = await captureOutput(() => configValidateCommand(f));
    expect(r.result).toBe(78);
    expect(r.err).toContain('key "admin.bearer_token"');
    for (const a of ["127.0.0.1:9464", "127.0.0.2:1", "[::1]:9464", "localhost:9464"]) {
      writeFileSync(f, `admin:\n  address: "${a}"\ncapture_all: true\nexporter: stdout\n`);
      r = await captureOutput(() => configValidateCommand(f));
      expect(r.result).toBe(0);
    }
  });

  test("a bad key, a bad value or a missing file: the error and exit 78", async () => {
    const f = join(dir, "bad.yaml");
    writeFileSync(f, "mode: ingress\nlogging:\n  level: loud\n");
    let r = await captureOutput(() => configValidateCommand(f));
    expect(r.result).toBe(78);
    expect(r.out).toBe("");
    expect(r.err).toContain(`${f}:3: key "logging.level": must be one of`);
    writeFileSync(f, "colour: blue\n");
    r = await captureOutput(() => configValidateCommand(f));
    expect(r.err).toContain('key "colour": unknown key');
    r = await captureOutput(() => configValidateCommand(join(dir, "missing.yaml")));
    expect(r.result).toBe(78);
    expect(r.err).toContain("cannot read config: ENOENT");
  });
});

describe("sd-notify", () => {
  afterEach(() => setNotifyBinaryForTest(null));

  test("without NOTIFY_SOCKET every call is a no-op", async () => {
    expect(notifyEnabled({})).toBe(false);
    expect(notifyEnabled({ NOTIFY_SOCKET: "relative" })).toBe(false);
    expect(notifyEnabled({ NOTIFY_SOCKET: "@abstract" })).toBe(true);
    expect(await sdNotify(["READY=1"], {})).toEqual({ sent: false, reason: "NOTIFY_SOCKET is not set" });
  });

  test("runs systemd-notify with the assignments (one line of status)", async () => {
    const log = join(dir, "notify-args");
    const fake = join(dir, "fake-notify.sh");
    writeFileSync(fake, `#!/bin/sh\nprintf '%s|' "$NOTIFY_SOCKET" "$@" >> ${log}\necho >> ${log}\n`);
    chmodSync(fake, 0o755);
    setNotifyBinaryForTest(fake);
    const saved = process.env.NOTIFY_SOCKET;
    process.env.NOTIFY_SOCKET = "@test-sock";
    try {
      expect(await notifyReady("capturing 3 processes\nsecond line")).toEqual({ sent: true });
      expect(await notifyReloading()).toEqual({ sent: true });
      expect(await notifyStatus("x")).toEqual({ sent: true });
    } finally {
      if (saved === undefined) delete process.env.NOTIFY_SOCKET;
      else process.env.NOTIFY_SOCKET = saved;
    }
    expect(readFileSync(log, "utf8").trim().split("\n")).toEqual([
      "@test-sock|READY=1|STATUS=capturing 3 processes second line|",
      "@test-sock|RELOADING=1|STATUS=reloading configuration|",
      "@test-sock|STATUS=x|",
    ]);
  });

  test("a failing systemd-notify resolves to sent: false with the reason", async () => {
    const fake = join(dir, "failing-notify.sh");
    writeFileSync(fake, "#!/bin/sh\necho 'No such file' >&2\nexit 1\n");
    chmodSync(fake, 0o755);
    setNotifyBinaryForTest(fake);
    expect(await sdNotify(["READY=1"], { NOTIFY_SOCKET: "/run/x" })).toEqual({ sent: false, reason: "systemd-notify exited 1: No such file" });
  });

  test("the real systemd-notify delivers to an abstract datagram socket (and its barrier completes)", async () => {
    const real = ["/usr/bin/systemd-notify", "/bin/systemd-notify"].find((p) => existsSync(p));
    const py = Bun.which("python3");
    if (!real || !py) {
      console.log(`SKIP real systemd-notify test: ${!real ? "systemd-notify" : "python3"} is not installed`);
      return;
    }
    const name = `ebpf-tracer-test-${process.pid}`;
    // A receiver like systemd's: reads datagrams, closes any passed fd (that completes BARRIER=1).
    const script = `
import socket, os, array, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\\0${name}")
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
print("listening", flush=True)
s.settimeout(10)
while True:
    msg, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(64))
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds = array.array("i"); fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
            for fd in fds: os.close(fd)
    text = msg.decode()
    print(repr(text), flush=True)
    if "BARRIER=1" in text: break  # systemd-notify's last message: its fd was closed above
`;
    const rx = Bun.spawn([py, "-c", script], { stdout: "pipe", stderr: "inherit" });
    const reader = rx.stdout.getReader();
    let got = "";
    while (!got.includes("listening")) {
      const { value, done } = await reader.read();
      if (done) break;
      got += new TextDecoder().decode(value);
    }
    setNotifyBinaryForTest(real);
    const res = await sdNotify(["READY=1", "STATUS=probes attached"], { NOTIFY_SOCKET: `@${name}` });
    await rx.exited;
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      got += new TextDecoder().decode(value);
    }
    expect(res).toEqual({ sent: true });
    expect(got).toContain("READY=1\\nSTATUS=probes attached");
  });

  test("watchdog interval from WATCHDOG_USEC, for this PID only", () => {
    expect(watchdogIntervalMs({})).toBe(0);
    expect(watchdogIntervalMs({ WATCHDOG_USEC: "30000000" })).toBe(15000);
    expect(watchdogIntervalMs({ WATCHDOG_USEC: "30000000", WATCHDOG_PID: String(process.pid) })).toBe(15000);
    expect(watchdogIntervalMs({ WATCHDOG_USEC: "30000000", WATCHDOG_PID: "1" })).toBe(0);
  });
});
