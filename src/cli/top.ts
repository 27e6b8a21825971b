/**
 * `ebpf-tracer top`: a live per-route view. It reads the running agent's admin endpoint
 * (/metrics for the RED histograms and counters, /status for uptime and health), or, with
 * --pid/--exe/--port, captures by itself like `capture` and reads the same text in-process.
 *
 * One row per service, direction and route, refreshed every --interval: requests/s and error %
 * over the last interval, p50/p95/p99 latency estimated from the histogram buckets of the last
 * interval (of all time when the interval had none; bucket bounds limit the precision), total
 * requests, body bytes/s. Sortable with keys; a header with agent health (events lost, shedding
 * and TLS counters when the agent has them). On a terminal: the alternate screen, fitted to its
 * size (80×24 works), q or Ctrl-C to quit. Not a terminal: plain frames of lines, --iterations
 * bounds them.
 */
import { loadConfig, defaultConfig, type Target } from "../config/config.ts";
import { TracerError } from "../errors.ts";
import { parsePrometheus, type PromSample } from "../metrics/prometheus.ts";
import { connectUrl } from "./status-command.ts";

export interface Row {
  service: string;
  dir: "in" | "out";
  route: string;
  count: number;
  errors: number;
  /** cumulative bucket counts by upper bound in seconds (Infinity last) */
  buckets: Map<number, number>;
  bytes: number;
}

export interface Frame {
  rows: Row[];
  counters: Map<string, number>;
  status: Record<string, unknown>;
  atMs: number;
}

const DURATION = /^(http|rpc)_(server|client)_(?:request_duration_seconds|duration_milliseconds)_(bucket|count)$/;
const SIZE = /^(http|rpc)_(server|client)_(?:request|response)_(?:body_)?size_bytes_sum$/;

function rowKey(s: PromSample, side: string): { key: string; service: string; dir: "in" | "out"; route: string } {
  const l = s.labels;
  const route = l.http_route ?? (l.rpc_service !== undefined ? `/${l.rpc_service}/${l.rpc_method ?? ""}` : l.otel_metric_overflow ? "(overflow)" : "(none)");
  const service = l.service_name ?? "";
  const dir = side === "server" ? "in" : "out";
  return { key: `${service}\u0000${dir}\u0000${route}`, service, dir, route };
}

/** Rows (summed over method and status) and agent counters from /metrics text. */
export function rowsFromMetrics(text: string): { rows: Map<string, Row>; counters: Map<string, number> } {
  const rows = new Map<string, Row>();
  const counters = new Map<string, number>();
  const row = (s: PromSample, side: string): Row => {
    const k = rowKey(s, side);
    let r = rows.get(k.key);
    if (!r) rows.set(k.key, (r = { service: k.service, dir: k.dir, route: k.route, count: 0, errors: 0, buckets: new Map(), bytes: 0 }));
    return r;
  };
  for (const s of parsePrometheus(text)) {
    const d = DURATION.exec(s.name);
    if (d) {
      const r = row(s, d[2]!);
      if (d[3] === "count") {
        r.count += s.value;
        if (s.labels.error_type !== undefined) r.errors += s.value;
      } else {
        const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le) / (d[1] === "rpc" ? 1000 : 1);
        r.buckets.set(le, (r.buckets.get(le) ?? 0) + s.value);
      }
      continue;
    }
    const z = SIZE.exec(s.name);
    if (z) {
      row(s, z[2]!).bytes += s.value;
      continue;
    }
    if (s.name.startsWith("ebpf_tracer_") && Object.keys(s.labels).length === 0) counters.set(s.name, s.value);
  }
  return { rows, counters };
}

/** The q-quantile (0..1) from cumulative bucket counts, linear within a bucket; undefined when empty. */
export function quantile(buckets: [number, number][], q: number): number | undefined {
  const total = buckets.length ? buckets[buckets.length - 1]![1] : 0;
  if (total <= 0) return undefined;
  const target = q * total;
  let prevBound = 0;
  let prevCum = 0;
  for (const [bound, cum] of buckets) {
    if (cum >= target && cum > prevCum) {
      if (bound === Infinity) return prevBound === 0 ? Infinity : -prevBound; // negative: "more than"
      return prevBound + ((bound - prevBound) * (target - prevCum)) / (cum - prevCum);
    }
    prevBound = bound === Infinity ? prevBound : bound;
    prevCum = cum;
  }
  return undefined;
}

export interface ViewRow {
  service: string;
  dir: "in" | "out";
  route: string;
  rps: number | undefined;
  errPct: number | undefined;
  p50: number | undefined;
  p95: number | undefined;
  p99: number | undefined;
  total: number;
  bytesPerSec: number | undefined;
}

function sortedBuckets(m: Map<number, number>, minus?: Map<number, number>): [number, number][] {
  return [...m.entries()].map(([b, c]) => [b, c - (minus?.get(b) ?? 0)] as [number, number]).sort((a, b) => a[0] - b[0]);
}

/** Rows of the view: rates over the time between `prev` and `cur` (none on the first frame). */
export function viewRows(cur: Frame, prev: Frame | undefined): ViewRow[] {
  const before = new Map<string, Row>();
  for (const r of prev?.rows ?? []) before.set(`${r.service}\u0000${r.dir}\u0000${r.route}`, r);
  const secs = prev ? (cur.atMs - prev.atMs) / 1000 : 0;
  return cur.rows.map((r) => {
    const p = before.get(`${r.service}\u0000${r.dir}\u0000${r.route}`);
    const dCount = prev ? r.count - (p?.count ?? 0) : 0;
    const dErr = prev ? r.errors - (p?.errors ?? 0) : 0;
    const recent = dCount > 0 ? sortedBuckets(r.buckets, p?.buckets) : sortedBuckets(r.buckets);
    const errBase = dCount > 0 ? dCount : r.count;
    return {
      service: r.service, dir: r.dir, route: r.route, total: r.count,
      rps: prev && secs > 0 ? dCount / secs : undefined,
      errPct: errBase > 0 ? (100 * (dCount > 0 ? dErr : r.errors)) / errBase : undefined,
      p50: quantile(recent, 0.5), p95: quantile(recent, 0.95), p99: quantile(recent, 0.99),
      bytesPerSec: prev && secs > 0 ? (r.bytes - (p?.bytes ?? 0)) / secs : undefined,
    };
  });
}

export const SORT_KEYS: Record<string, { label: string; by: (r: ViewRow) => number | string }> = {
  r: { label: "rate", by: (r) => r.rps ?? -1 },
  e: { label: "errors", by: (r) => r.errPct ?? -1 },
  "5": { label: "p50", by: (r) => Math.abs(r.p50 ?? -1) },
  "9": { label: "p95", by: (r) => Math.abs(r.p95 ?? -1) },
  p: { label: "p99", by: (r) => Math.abs(r.p99 ?? -1) },
  t: { label: "total", by: (r) => r.total },
  b: { label: "bytes", by: (r) => r.bytesPerSec ?? -1 },
  n: { label: "route", by: (r) => `${r.service} ${r.route}` },
};

export function sortRows(rows: ViewRow[], key: string): ViewRow[] {
  const k = SORT_KEYS[key] ?? SORT_KEYS.t!;
  return rows.slice().sort((a, b) => {
    const x = k.by(a);
    const y = k.by(b);
    if (typeof x === "string" || typeof y === "string") return String(x).localeCompare(String(y));
    return y - x || b.total - a.total || a.route.localeCompare(b.route);
  });
}

function fmtDur(s: number | undefined): string {
  if (s === undefined) return "-";
  if (s === Infinity) return ">10s";
  const more = s < 0;
  const v = Math.abs(s);
  const t = v < 1 ? `${v * 1000 < 10 ? (v * 1000).toFixed(1) : Math.round(v * 1000)}ms` : `${v < 10 ? v.toFixed(2) : v.toFixed(1)}s`;
  return more ? `>${t}` : t;
}

function fmtNum(n: number | undefined, digits = 1): string {
  if (n === undefined) return "-";
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return Number.isInteger(n) ? String(n) : n.toFixed(digits);
}

function fmtBytes(n: number | undefined): string {
  if (n === undefined) return "-";
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)}M`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)}k`;
  return String(Math.round(n));
}

function fit(s: string, w: number): string {
  if (s.length <= w) return s.padEnd(w);
  return w <= 1 ? s.slice(0, w) : s.slice(0, w - 1) + "…";
}

function uptime(sec: unknown): string {
  if (typeof sec !== "number") return "?";
  const h = Math.floor(sec / 3600);
  const m = Math.floor((sec % 3600) / 60);
  return h ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(Math.floor(sec % 60)).padStart(2, "0")}s`;
}

/** A TLS coverage report (per process, `connections: { tls, decrypted }`) summed up, when /status has one. */
function tlsSummary(v: unknown): string | undefined {
  const o = v as { processes?: unknown } | null;
  const list = Array.isArray(v) ? v : o && typeof o === "object" && Array.isArray(o.processes) ? o.processes : undefined;
  if (!list) return undefined;
  let tls = 0;
  let decrypted = 0;
  let seen = false;
  for (const p of list as { connections?: { tls?: unknown; decrypted?: unknown } }[]) {
    const c = p?.connections;
    if (c && typeof c.tls === "number") {
      seen = true;
      tls += c.tls;
      decrypted += typeof c.decrypted === "number" ? c.decrypted : 0;
    }
  }
  return seen ? `${decrypted}/${tls} connections decrypted` : undefined;
}

/** Health: events lost, shedding and TLS counters when the agent reports them. */
export function healthLine(f: Frame): string {
  const c = f.counters;
  const sum = (re: RegExp) => {
    let n: number | undefined;
    for (const [k, v] of c) if (re.test(k)) n = (n ?? 0) + v;
    return n;
  };
  const lost = c.get("ebpf_tracer_event_lost_total");
  const ratio = c.get("ebpf_tracer_sampling_ratio") ?? c.get("ebpf_tracer_sampling_ratio_total");
  const shedConns = c.get("ebpf_tracer_shed_connections_total");
  const shed = ratio === undefined && shedConns === undefined ? undefined
    : `${ratio !== undefined && ratio < 1 ? `ratio ${ratio.toFixed(2)}` : "no"}${shedConns ? ` (${shedConns} conns shed)` : ""}`;
  const tlsKey = Object.keys(f.status).find((k) => /tls/i.test(k));
  const tls = tlsKey !== undefined ? tlsSummary(f.status[tlsKey]) ?? JSON.stringify(f.status[tlsKey]).replace(/["{}[\]]/g, "").slice(0, 40) : sum(/^ebpf_tracer_tls_/) !== undefined ? `${sum(/^ebpf_tracer_tls_/)} connections seen` : "n/a";
  const healthy = f.status.healthy === false ? "DEGRADED" : f.status.healthy === true ? "healthy" : "?";
  return `${healthy} · events lost ${lost ?? "n/a"} · shedding ${shed ?? "n/a"} · TLS ${tls}`;
}

/** The lines of one frame for a `width`×`height` screen (height 0: no limit). */
export function renderFrame(f: Frame, prev: Frame | undefined, sortKey: string, width: number, height: number, source: string): string[] {
  const rows = sortRows(viewRows(f, prev), sortKey);
  const w = Math.max(60, width);
  const lines: string[] = [];
  // One service: named in the header, no column for it (more room for routes in 80 columns).
  const services = new Set(rows.map((r) => r.service));
  const oneService = services.size === 1 ? [...services][0]! : undefined;
  lines.push(fit(`ebpf-tracer top · ${source} · up ${uptime(f.status.uptime_seconds)} · ${oneService !== undefined ? `${oneService} · ` : ""}${rows.length} routes`, w));
  lines.push(fit(healthLine(f), w));
  lines.push(fit(`sort: ${SORT_KEYS[sortKey]?.label ?? "total"} · keys r e 5 9 p t b n · q quit`, w));
  const svcW = oneService !== undefined ? 0 : Math.min(12, Math.max(7, ...rows.map((r) => r.service.length)));
  const fixed = [3, 6, 5, 6, 6, 6, 6, 7];
  const routeW = Math.max(10, w - (svcW ? svcW + 1 : 0) - fixed.reduce((a, b) => a + b + 1, 0));
  const cols = (c: string[]) =>
    [...(svcW ? [fit(c[0]!, svcW)] : []), fit(c[1]!, routeW), c[2]!.padEnd(3), ...c.slice(3).map((x, i) => x.padStart(fixed[i + 1]!))].join(" ");
  lines.push(cols(["SERVICE", "ROUTE", "DIR", "REQ/S", "ERR%", "P50", "P95", "P99", "TOTAL", "BYTES/S"]));
  const room = height > 0 ? Math.max(1, height - lines.length - 1) : rows.length;
  for (const r of rows.slice(0, room)) {
    lines.push(cols([r.service, r.route, r.dir, fmtNum(r.rps), r.errPct === undefined ? "-" : r.errPct.toFixed(1), fmtDur(r.p50), fmtDur(r.p95), fmtDur(r.p99), fmtNum(r.total), fmtBytes(r.bytesPerSec)]));
  }
  if (rows.length > room) lines.push(`… ${rows.length - room} more (sort to see others)`);
  if (rows.length === 0) lines.push("(no API calls seen yet)");
  return lines;
}

export interface TopOptions {
  config: string;
  address?: string;
  interval: string;
  sort: string;
  iterations?: string;
  pid: number[];
  exe: string[];
  port: number[];
}

type Source = { name: string; read(): Promise<{ metrics: string; status: Record<string, unknown> }>; stop(): Promise<void> };

async function adminSource(address: string): Promise<Source> {
  const base = connectUrl(address);
  const get = async (p: string) => {
    const res = await fetch(base + p, { signal: AbortSignal.timeout(3000) });
    if (!res.ok) throw new Error(`${p}: HTTP ${res.status}`);
    return res.text();
  };
  return {
    name: address,
    async read() {
      const [metrics, status] = await Promise.all([get("/metrics"), get("/status").then((t) => JSON.parse(t) as Record<string, unknown>)]);
      return { metrics, status };
    },
    async stop() {},
  };
}

/** Standalone: capture in this process (needs root) and read the tap directly. */
async function standaloneSource(o: TopOptions): Promise<Source> {
  const { Agent } = await import("../agent/agent.ts");
  const { ApiTap } = await import("../metrics/tap.ts");
  const { renderMetrics } = await import("./admin-server.ts");
  const { requireCaptureCaps } = await import("./privileges.ts");
  const { resolveBtf } = await import("../kernel/btf/resolve.ts");
  const { log } = await import("../log/log.ts");
  const cfg = o.config ? loadConfig(o.config, true) : defaultConfig();
  log.configure("error", "console");
  const extraTargets: Target[] = [
    ...o.pid.map((pid) => ({ pid, mode: cfg.mode })),
    ...o.exe.map((exe) => ({ exe, mode: cfg.mode })),
    ...o.port.map((port) => ({ port, mode: cfg.mode })),
  ];
  requireCaptureCaps();
  const tap = new ApiTap({ export() {}, async shutdown() {}, stats: () => ({}) }, cfg);
  const btf = await resolveBtf(cfg.btf);
  const agent = await Agent.start({ cfg, sink: tap, extraTargets, btfCustomPath: btf.path, btfSource: btf.source });
  agent.kernel.closeInBackground = true; // q / Ctrl-C returns at once, like capture
  return {
    name: `capturing ${[...o.exe, ...o.pid.map(String), ...o.port.map((p) => `:${p}`)].join(",")}`,
    async read() {
      return { metrics: renderMetrics(agent.stats(), true) + tap.prometheus(), status: { uptime_seconds: Math.round((Date.now() - agent.startedAt) / 1000), healthy: true } };
    },
    stop: () => agent.stop(500),
  };
}

function parseInterval(v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(v.trim());
  if (!m) throw new TracerError("CONFIG", `--interval: not a duration like 1s or 500ms: ${JSON.stringify(v)}`);
  return Math.max(100, Number(m[1]) * (m[2] === "ms" ? 1 : 1000));
}

export async function topCommand(o: TopOptions): Promise<number> {
  const intervalMs = parseInterval(o.interval);
  if (!SORT_KEYS[o.sort]) throw new TracerError("CONFIG", `--sort: one of ${Object.keys(SORT_KEYS).join(" ")} (${Object.values(SORT_KEYS).map((k) => k.label).join(", ")})`);
  const iterations = o.iterations !== undefined ? Number(o.iterations) : Infinity;
  const standalone = o.pid.length + o.exe.length + o.port.length > 0;
  let source: Source;
  if (standalone) source = await standaloneSource(o);
  else {
    let address = o.address;
    if (!address) {
      const cfg = loadConfig(o.config, true);
      if (!cfg.admin.enabled) throw new TracerError("CONFIG", `${o.config}: the admin endpoint is disabled (admin.enabled: false); top reads it, or give --exe/--pid/--port to capture by itself`);
      address = cfg.admin.address;
    }
    source = await adminSource(address);
  }
  const tty = process.stdout.isTTY === true;
  let sortKey = o.sort;
  let prev: Frame | undefined;
  let last: Frame | undefined;
  let beforeLast: Frame | undefined;
  let stop: (() => void) | undefined;
  const stopped = new Promise<void>((res) => (stop = res));
  const onSignal = () => stop!();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const draw = (f: Frame, prev: Frame | undefined) => {
    if (tty) {
      const lines = renderFrame(f, prev, sortKey, process.stdout.columns ?? 80, process.stdout.rows ?? 24, source.name);
      const w = Math.max(60, process.stdout.columns ?? 80);
      process.stdout.write("\x1b[H" + lines.map((l) => l.slice(0, w) + "\x1b[K").join("\r\n") + "\x1b[J");
    } else {
      process.stdout.write(renderFrame(f, prev, sortKey, 120, 0, source.name).join("\n") + "\n\n");
    }
  };
  const onKey = (buf: Buffer) => {
    for (const ch of buf.toString("latin1")) {
      if (ch === "q" || ch === "\x03") stop!();
      else if (SORT_KEYS[ch]) {
        sortKey = ch;
        if (last) draw(last, beforeLast);
      }
    }
  };
  if (tty) {
    process.stdout.write("\x1b[?1049h\x1b[?25l");
    if (process.stdin.isTTY) {
      process.stdin.setRawMode(true);
      process.stdin.on("data", onKey);
      process.stdin.resume();
    }
  }
  let failure: string | undefined;
  try {
    for (let i = 0; i < iterations; i++) {
      let got: { metrics: string; status: Record<string, unknown> };
      try {
        got = await source.read();
      } catch (e) {
        failure = `cannot read the agent at ${source.name}: ${(e as Error).message}`;
        if (!tty) break;
        process.stdout.write(`\x1b[H${failure}\x1b[K\r\n(is the agent running with admin.enabled? retrying; q quits)\x1b[J`);
        if (await Promise.race([stopped.then(() => true), Bun.sleep(intervalMs).then(() => false)])) break;
        continue;
      }
      failure = undefined;
      const parsed = rowsFromMetrics(got.metrics);
      const f: Frame = { rows: [...parsed.rows.values()], counters: parsed.counters, status: got.status, atMs: Date.now() };
      draw(f, prev);
      beforeLast = prev;
      prev = f;
      last = f;
      if (i + 1 >= iterations) break;
      if (await Promise.race([stopped.then(() => true), Bun.sleep(intervalMs).then(() => false)])) break;
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    if (tty) {
      if (process.stdin.isTTY) {
        process.stdin.off("data", onKey);
        process.stdin.setRawMode(false);
        process.stdin.pause();
      }
      process.stdout.write("\x1b[?25h\x1b[?1049l");
    }
    await source.stop();
  }
  if (failure) {
    process.stderr.write(`ebpf-tracer: ${failure}\n`);
    return 3;
  }
  return 0;
}
