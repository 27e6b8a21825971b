/**
 * The local admin endpoint (config `admin.enabled`, `admin.address`, default 127.0.0.1:9464),
 * Bun.serve, no dependencies:
 *
 *   GET /healthz  200 "ok" when healthy, 503 with one reason per line when not
 *   GET /metrics  Prometheus text format 0.0.4: every counter of the agent's stats line as
 *                 `ebpf_tracer_<snake_case>` (counters get `_total`, gauges do not; see isGauge),
 *                 plus process CPU, RSS, start time and `ebpf_tracer_healthy`
 *   GET /status   JSON: whatever StatusProvider.status() returns (version, uptime, BTF source,
 *                 attach mode, selected processes, exporter state), plus `healthy` and `reasons`
 *   GET /probes   JSON: the BPF programs the agent attached (StatusProvider.probes)
 *
 * A provider that throws answers 500 for that request; the server keeps running. HEAD is answered
 * like GET without a body; other methods get 405.
 *
 * Exposure: the endpoint binds loopback addresses only, unless `allowRemote` and a bearer token
 * are given (config admin.allow_remote, admin.bearer_token); with a token every request must
 * carry `Authorization: Bearer <token>` (401 otherwise). Without a token, requests whose Host is
 * not a loopback name are refused (403), so a web page cannot read it through DNS rebinding.
 * Nothing it serves holds a secret: no tokens, headers, command lines or endpoint credentials.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { isLoopbackHost } from "../config/config.ts";
import { describeSection } from "../kernel/bpf-audit.ts";
import { TracerError } from "../errors.ts";
import { SHED_REASON_TEXT, type ShedReason } from "../agent/budget.ts";

export interface StatusProvider {
  health(): { ok: boolean; reasons: string[] };
  /**
   * Flat name → value, the same names as the stats log line ("SpansWritten"). A name may carry
   * Prometheus labels: `ProbeEntries{syscall="read"}` → `ebpf_tracer_probe_entries_total{syscall="read"}`.
   */
  counters(): Record<string, number>;
  status(): Record<string, unknown>;
  /** More exposition text appended to /metrics as is (the RED histograms of src/metrics/tap.ts). */
  extraMetrics?(): string;
  /** What is attached now (GET /probes, `ebpf-tracer probes`); absent: an empty list. */
  probes?(): ProbeInfo[];
}

/** One attached BPF program, as listed by GET /probes. */
export interface ProbeInfo {
  /** BPF program name */
  program: string;
  /** tracepoint, kprobe/kretprobe function, or uprobe "binary:symbol" */
  attach_point: string;
  /** tracepoint | kprobe | kretprobe | uprobe | uretprobe | raw_tracepoint | other */
  kind: string;
  /** uprobes: the file the probe is in */
  target?: string;
  /** SHA-256 of the BPF object file the program came from */
  object_sha256?: string;
  /** ISO time of attachment */
  attached_at?: string;
}

export interface AdminOptions {
  /** allow a non-loopback address (admin.allow_remote); needs bearerToken */
  allowRemote?: boolean;
  /** admin.bearer_token: required on every request when set */
  bearerToken?: string;
}

export interface AdminServer {
  stop(): void;
  /** http://host:port (the real port when the address asked for port 0) */
  url: string;
}

/** Names in the agent's stats that are current values, not running totals. */
const GAUGES = new Set([
  "SamplingRatio",
  "OpenConnections",
  "TrackedProcesses",
  "KprobeEventMaxQueueSizeTillNow",
  "SpansQueued",
  "SpoolSpans",
  "SpoolBytes",
  "InFlightRequests",
  "LastExportLatencyMs",
  "SelectedProcesses",
]);

export function isGauge(name: string): boolean {
  return GAUGES.has(name) || /^(Open|Tracked|Selected|InFlight|Last|Current)[A-Z]|(Queued|TillNow|HighWater)$/.test(name);
}

/** "KprobeEventMaxQueueSizeTillNow" → "kprobe_event_max_queue_size_till_now"; "HTTPErrors" → "http_errors". */
export function snakeCase(name: string): string {
  return name
    .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
    .replace(/([A-Z]+)([A-Z][a-z])/g, "$1_$2")
    .replace(/[^A-Za-z0-9_]+/g, "_")
    .replace(/_+/g, "_")
    .replace(/^_|_$/g, "")
    .toLowerCase();
}

function promValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

function splitLabels(key: string): { name: string; labels: string } {
  const m = /^([^{]+)(\{.*\})$/.exec(key);
  return m ? { name: m[1]!, labels: m[2]! } : { name: key, labels: "" };
}

/** Renders the Prometheus text exposition (format 0.0.4). */
export function renderMetrics(counters: Record<string, number>, healthy: boolean, proc = processMetrics()): string {
  const families = new Map<string, { type: "counter" | "gauge"; help: string; samples: string[] }>();
  const add = (metric: string, type: "counter" | "gauge", help: string, labels: string, value: number) => {
    let f = families.get(metric);
    if (!f) families.set(metric, (f = { type, help, samples: [] }));
    f.samples.push(`${metric}${labels} ${promValue(value)}`);
  };
  add("ebpf_tracer_healthy", "gauge", "1 when /healthz reports healthy, else 0", "", healthy ? 1 : 0);
  add("ebpf_tracer_process_cpu_seconds_total", "counter", "user and system CPU time of the agent process, seconds", "", proc.cpuSeconds);
  add("ebpf_tracer_process_resident_memory_bytes", "gauge", "resident set size of the agent process, bytes", "", proc.rssBytes);
  add("ebpf_tracer_process_start_time_seconds", "gauge", "start time of the agent process, seconds since the Unix epoch", "", proc.startTimeSeconds);
  for (const [key, value] of Object.entries(counters)) {
    if (typeof value !== "number") continue;
    const { name, labels } = splitLabels(key);
    const gauge = isGauge(name);
    const metric = `ebpf_tracer_${snakeCase(name)}${gauge ? "" : "_total"}`;
    add(metric, gauge ? "gauge" : "counter", `${name} from the agent's stats line${gauge ? " (current value)" : ""}`, labels, value);
  }
  let out = "";
  for (const [metric, f] of families) {
    out += `# HELP ${metric} ${f.help}\n# TYPE ${metric} ${f.type}\n${f.samples.join("\n")}\n`;
  }
  return out;
}

export function processMetrics(): { cpuSeconds: number; rssBytes: number; startTimeSeconds: number } {
  const cpu = process.cpuUsage();
  return {
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    rssBytes: process.memoryUsage.rss(),
    startTimeSeconds: Math.round((Date.now() - process.uptime() * 1000) / 10) / 100,
  };
}

/** "127.0.0.1:9464", "[::1]:9464", "localhost:0", ":9464" (all interfaces) → hostname and port. */
export function parseAddress(address: string): { hostname: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(address.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new TracerError("CONFIG", `key "admin.address": must be HOST:PORT like 127.0.0.1:9464, got ${JSON.stringify(address)}`, { key: "admin.address" });
  }
  const hostname = m[1] ?? m[2] ?? "";
  return { hostname: hostname === "" ? "0.0.0.0" : hostname, port };
}

function text(body: string, status = 200, type = "text/plain; charset=utf-8"): Response {
  return new Response(body, { status, headers: { "content-type": type, "cache-control": "no-store" } });
}

/**
 * Starts the admin endpoint. Throws TracerError (CONFIG for a malformed address, IO when the
 * address cannot be bound, e.g. in use).
 */
export function startAdminServer(address: string, provider: StatusProvider, opts: AdminOptions = {}): AdminServer {
  const { hostname, port } = parseAddress(address);
  const token = opts.bearerToken ?? "";
  if (!isLoopbackHost(hostname)) {
    if (!opts.allowRemote) {
      throw new TracerError("CONFIG", `key "admin.address": ${address} is not a loopback address; set admin.allow_remote: true and admin.bearer_token to expose the admin endpoint`, { key: "admin.address" });
    }
    if (token.length < 16) {
      throw new TracerError("CONFIG", `key "admin.bearer_token": a non-loopback admin.address needs a bearer token of at least 16 characters`, { key: "admin.bearer_token" });
    }
  }
  const tokenDigest = token ? createHash("sha256").update(token).digest() : undefined;
  const authorized = (req: Request): boolean => {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.get("authorization") ?? "");
    if (!m || !tokenDigest) return false;
    return timingSafeEqual(createHash("sha256").update(m[1]!).digest(), tokenDigest);
  };
  const handle = (req: Request): Response => {
    let path: string;
    try {
      path = new URL(req.url).pathname;
    } catch {
      return text("bad request\n", 400);
    }
    if (tokenDigest) {
      if (!authorized(req)) return new Response("unauthorized\n", { status: 401, headers: { "www-authenticate": 'Bearer realm="ebpf-tracer"', "cache-control": "no-store" } });
    } else if (!loopbackHostHeader(req.headers.get("host"))) {
      return text("forbidden: not a loopback Host\n", 403);
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("method not allowed\n", { status: 405, headers: { allow: "GET, HEAD" } });
    }
    try {
      switch (path) {
        case "/healthz": {
          const h = provider.health();
          return h.ok ? text("ok\n") : text(`unhealthy\n${h.reasons.map((r) => r + "\n").join("")}`, 503);
        }
        case "/metrics":
          return text(renderMetrics(provider.counters(), provider.health().ok) + (provider.extraMetrics?.() ?? ""), 200, "text/plain; version=0.0.4; charset=utf-8");
        case "/status": {
          const h = provider.health();
          const body = { ...provider.status(), healthy: h.ok, reasons: h.reasons };
          return text(JSON.stringify(body, (_k, v) => (typeof v === "bigint" ? v.toString() : v), 2) + "\n", 200, "application/json");
        }
        case "/probes":
          return text(JSON.stringify({ probes: provider.probes?.() ?? [] }, null, 2) + "\n", 200, "application/json");
        case "/":
          return text("ebpf-tracer admin: /healthz /metrics /status /probes\n");
        default:
          return text("not found\n", 404);
      }
    } catch (e) {
      return text(`internal error: ${(e as Error)?.message ?? String(e)}\n`, 500);
    }
  };
  let server: ReturnType<typeof Bun.serve>;
  try {
    server = Bun.serve({ hostname, port, fetch: handle, idleTimeout: 10, maxRequestBodySize: 1024 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new TracerError("IO", `admin endpoint: cannot listen on ${address}: ${code}`, { key: "admin.address" });
  }
  const host = hostname.includes(":") ? `[${hostname}]` : hostname;
  return {
    url: `http://${host}:${server.port}`,
    stop() {
      server.stop(true);
    },
  };
}

/** A Host header naming a loopback address (with or without port); absent counts as loopback (HTTP/1.0). */
function loopbackHostHeader(host: string | null): boolean {
  if (host === null || host === "") return true;
  const m = /^(?:\[([^\]]+)\]|([^:]+))(?::\d{1,5})?$/.exec(host.trim());
  return m !== null && isLoopbackHost(m[1] ?? m[2] ?? "");
}

/** An endpoint URL without user info, query or fragment (they may hold credentials). */
export function publicEndpoint(endpoint: string): string {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(endpoint)) return endpoint.replace(/^[^/@]*@/, "").replace(/[/?#].*$/, ""); // host:port
  try {
    const u = new URL(endpoint);
    return `${u.protocol}//${u.host}${u.pathname === "/" ? "" : u.pathname}`;
  } catch {
    return endpoint.replace(/\/\/[^/@]*@/, "//").replace(/[?#].*$/, "");
  }
}

/** What agentStatusProvider reads from the running agent (Agent satisfies it structurally). */
export interface AgentView {
  readonly startedAt: number;
  stats(): Record<string, number>;
  kernelCounters(): { probes: Record<string, [number, number]> };
  readonly selector: { selected(): { pid: number; name: string; exe: string; mode: string; service?: string }[] };
  readonly kernel: { readonly attachMode: string; readonly buffer: string; readonly libbpfVersion: string; readonly attached: string[]; readonly audit?: { list(): ProbeInfo[] } };
  readonly currentConfig: { exporter: string; agent_config: { reporting: { endpoint: string } } };
  /** TLS capture: the per-process coverage report (src/kernel/tls/coverage.ts) */
  readonly tls?: { snapshot(): object[]; readonly coverage: { prometheus(): string[] } };
  /** the overhead budget's shedding: why connections are shed now, or undefined when they are not */
  readonly budget?: { shedReason(): ShedReason | undefined };
}

/** The values of `keys` that `s` has. */
function pick(s: Record<string, number>, keys: readonly string[]): Record<string, number> {
  return Object.fromEntries(keys.filter((k) => k in s).map((k) => [k, s[k]!]));
}

export interface AgentInfo {
  /** the attached probes for /probes (the kernel side's audit list); default: the attached sections */
  probes?: () => ProbeInfo[];
  version: string;
  /** where BTF came from: kernel, config, bundled, downloaded */
  btfSource: string;
  btfPath?: string;
  /** the exporter is called failing (and /healthz degraded) after this long without success */
  exporterFailingAfterMs?: number;
  now?: () => number;
  /** see StatusProvider.extraMetrics */
  extraMetrics?: () => string;
}

const EXPORT_ERRORS = ["ExportErrorsNetwork", "ExportErrorsTls", "ExportErrorsHttp4xx", "ExportErrorsHttp5xx", "WriteErrors"];

/**
 * The StatusProvider of a running agent: counters are the stats line plus per-syscall probe
 * counters; health is degraded when the exporter has only failed for exporterFailingAfterMs
 * (default 2 min); status has version, uptime, BTF, attach mode, selected processes, exporter.
 */
export function agentStatusProvider(agent: AgentView, info: AgentInfo): StatusProvider {
  const now = info.now ?? Date.now;
  const failingAfter = info.exporterFailingAfterMs ?? 120_000;
  let lastOk = -1;
  let lastErr = -1;
  let failingSince = 0;
  const exporterState = (s: Record<string, number>): { state: string; failingForMs: number } => {
    const ok = (s.ExportRequestsOk ?? 0) + (s.SpansWritten ?? 0);
    const err = EXPORT_ERRORS.reduce((a, k) => a + (s[k] ?? 0), 0);
    const t = now();
    if (lastOk < 0) {
      if (err > 0 && ok === 0) failingSince = t; // first look: only failures so far
    } else if (ok > lastOk) {
      failingSince = 0; // a success since the last look
    } else if (err > lastErr && failingSince === 0) {
      failingSince = t; // failures and no success since the last look
    }
    lastOk = ok;
    lastErr = err;
    if (failingSince) return { state: "failing", failingForMs: t - failingSince };
    return { state: ok > 0 ? "ok" : "idle", failingForMs: 0 };
  };
  const tlsMetrics = (): string => {
    const lines = agent.tls?.coverage.prometheus() ?? [];
    if (!lines.length) return "";
    const types = ["# TYPE ebpf_tracer_tls_stacks gauge", "# TYPE ebpf_tracer_tls_probes_attached gauge", "# TYPE ebpf_tracer_tls_connections_total counter"];
    return [...types, ...lines].join("\n") + "\n";
  };
  return {
    extraMetrics: () => (info.extraMetrics?.() ?? "") + tlsMetrics(),
    health() {
      const reasons: string[] = [];
      const e = exporterState(agent.stats());
      if (e.state === "failing" && e.failingForMs >= failingAfter) {
        reasons.push(`exporter: every export failed for ${Math.round(e.failingForMs / 1000)}s (${agent.currentConfig.exporter})`);
      }
      return { ok: reasons.length === 0, reasons };
    },
    counters() {
      const out: Record<string, number> = { ...agent.stats(), SelectedProcesses: agent.selector.selected().length };
      for (const [syscall, [entries, exits]] of Object.entries(agent.kernelCounters().probes)) {
        out[`ProbeEntries{syscall="${syscall}"}`] = entries;
        out[`ProbeExits{syscall="${syscall}"}`] = exits;
      }
      return out;
    },
    probes() {
      if (info.probes) return info.probes();
      return agent.kernel.audit?.list() ?? agent.kernel.attached.map((section) => probeFromSection(section));
    },
    status() {
      const cfg = agent.currentConfig;
      const s = agent.stats();
      const e = exporterState(s);
      const why = agent.budget?.shedReason();
      return {
        version: info.version,
        pid: process.pid,
        uptime_seconds: Math.round((now() - agent.startedAt) / 1000),
        btf_source: info.btfSource,
        btf_path: info.btfPath ?? "/sys/kernel/btf/vmlinux",
        attach_mode: agent.kernel.attachMode,
        buffer: agent.kernel.buffer,
        probes_attached: agent.kernel.attached.length,
        libbpf: agent.kernel.libbpfVersion,
        selected_processes: agent.selector.selected().map((p) => ({ pid: p.pid, name: p.name, exe: p.exe, mode: p.mode, ...(p.service ? { service: p.service } : {}) })),
        tls_capture: agent.tls?.snapshot() ?? [],
        // what is captured of the selected processes' connections (docs/operations.md, "Overhead budget")
        sampling: {
          ratio: s.SamplingRatio ?? 1,
          shedding: why ? SHED_REASON_TEXT[why] : "no",
          ...pick(s, ["ShedConnections", "ShedRequestsEstimated", "ReadmittedConnections", "FallingBehind"]),
        },
        exporter: {
          kind: cfg.exporter,
          ...(cfg.exporter === "otlp" ? { endpoint: publicEndpoint(cfg.agent_config.reporting.endpoint) } : {}),
          state: e.state,
          ...(e.failingForMs ? { failing_for_seconds: Math.round(e.failingForMs / 1000) } : {}),
          ...pick(s, ["SpansWritten", "TotalRequestsSent", "SpansQueued", "SpoolSpans", "SpansDropped"]),
        },
      };
    },
  };
}

/** "tracepoint/syscalls/sys_enter_read" → a ProbeInfo with the kind and attach point it names. */
export function probeFromSection(section: string): ProbeInfo {
  const { kind, attach_point } = describeSection(section);
  const out: ProbeInfo = { program: section, attach_point, kind };
  if (kind === "uprobe" || kind === "uretprobe") {
    const c = attach_point.lastIndexOf(":");
    if (c > 0) out.target = attach_point.slice(0, c);
  }
  return out;
}
