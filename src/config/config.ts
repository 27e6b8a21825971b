/**
 * Loads and validates the agent's config (YAML, or TOML by extension). Every error names the
 * file, the dotted key, the line (when the text shows it) and the reason, and is thrown before
 * anything is touched. Values not given take SCHEMA's defaults.
 */
import { closeSync, fstatSync, openSync, readFileSync, statSync } from "node:fs";
import { configFileWarnings, factsOf, refuseUnsafeConfigFile, secretKeys } from "./file-security.ts";
import { TracerError } from "../errors.ts";
import { REDACT_PATTERN_NAMES, SCHEMA, type FieldSpec, type Mode } from "./schema.ts";

export const DEFAULT_CONFIG_PATH = "/etc/traceable/ebpf-tracer-config.yaml";

export interface Target {
  service_name?: string;
  exe?: string;
  cmdline?: string;
  mode?: Mode;
  systemd_unit?: string;
  cgroup?: string;
  container?: string;
  port?: number;
  pid?: number;
  max_spans_per_second?: number;
  /** line of the item in the config text, for messages */
  line?: number;
}

export interface LogRotation {
  enabled: boolean;
  filename: string;
  filepath: string;
  max_size: number;
  max_backups: number;
}

export interface RedactConfig {
  mode: "mask" | "hash";
  headers: string[];
  fields: string[];
  value_patterns: string[];
  custom_patterns: string[];
  key_file: string;
}

export interface Config {
  /** where it was read from; "" for defaults */
  source: string;
  mode: Mode;
  service_name: string;
  environment: string;
  exporter: string;
  capture: { pids: number[]; exe: string[]; ports: number[] };
  capture_all: boolean;
  targets: Target[];
  exclude_processes: string[];
  custom_span_attributes: Record<string, string>;
  proc_fs_scan_period_in_sec: number;
  data_capture: { body_max_size_bytes: number; allowed_content_types: string[]; redact: RedactConfig };
  budget: { cpu_percent: number; memory_mb: number };
  http2_data_capture_enabled: boolean;
  http2: { stream_max_age: number; max_streams_per_connection: number };
  bpf: { ringbuf_size_mb: number; buffer: "auto" | "ringbuf" | "perf"; thread_state: "auto" | "task_storage" | "hash"; max_capture_bytes_per_call: number };
  enable_tracepoints: boolean;
  enable_uprobes: boolean;
  libssl_prefixes: string[];
  uprobe_attach_exclusion_rules: { exe?: string; cmdline?: string; line?: number }[];
  custom_ssl_address: { binary?: string; ssl_read?: number; ssl_write?: number; ssl_free?: number; line?: number }[];
  max_active_ret_probe: number;
  perfmap_queue_size: number;
  btf: { path: string; download_url: string; download_storage_path: string; download_timeout: number };
  agent_config: {
    secure: boolean;
    ca_cert_file: string;
    reporting: {
      endpoint: string;
      cert_file: string;
      key_file: string;
      agent_token: string;
      headers: Record<string, string>;
      encoding: "protobuf" | "json";
      compression: "gzip" | "zstd" | "none";
      max_batch_spans: number;
      max_batch_delay: number;
      max_in_flight: number;
      max_queue_spans: number;
      request_timeout: number;
    };
  };
  spool: { path: string; max_size_mb: number };
  shutdown_timeout: number;
  stats_interval: number;
  logging: {
    level: "trace" | "debug" | "info" | "warn" | "error";
    encoding: "json" | "console";
    output_paths: string[];
    error_output_paths: string[];
    log_rotation: LogRotation;
  };
  routes: { service?: string; patterns: string[]; line?: number }[];
  metrics: { enabled: boolean; export_interval: number; max_series: number; max_routes_per_service: number; inventory_path: string };
  admin: { enabled: boolean; address: string; allow_remote: boolean; bearer_token: string };
}

export function defaultConfig(): Config {
  return validateConfig({}, "", "");
}

/** Reads and validates a config file. A missing file is an error unless `optional`. */
export function loadConfig(path: string, optional = false): Config {
  let text: string;
  let fd: number | undefined;
  try {
    fd = openSync(path, "r");
    // the checks look at the file that is read, not at whatever the path names a moment later
    refuseUnsafeConfigFile(path, factsOf(fstatSync(fd)));
    text = readFileSync(fd, "utf8");
  } catch (e) {
    if (e instanceof TracerError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (optional && code === "ENOENT") return defaultConfig();
    throw new TracerError("CONFIG", `${path}: cannot read config: ${code ?? String(e)}`);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  return parseConfigText(text, path);
}

/** Warnings about the config file itself (secrets readable by others); [] for defaults. */
export function configFileWarningsFor(cfg: Config): string[] {
  if (!cfg.source) return [];
  try {
    return configFileWarnings(cfg.source, factsOf(statSync(cfg.source)), secretKeys(cfg));
  } catch {
    return [];
  }
}

export function parseConfigText(text: string, path: string): Config {
  let raw: unknown;
  try {
    raw = path.endsWith(".toml") ? Bun.TOML.parse(text) : Bun.YAML.parse(text);
  } catch (e) {
    throw new TracerError("CONFIG", `${path}: not valid ${path.endsWith(".toml") ? "TOML" : "YAML"}: ${(e as Error).message}`);
  }
  if (Array.isArray(raw) && raw.length === 1 && typeof raw[0] === "object" && raw[0] !== null && !Array.isArray(raw[0])) raw = raw[0]; // single-document stream
  if (raw === null || raw === undefined) raw = {};
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw new TracerError("CONFIG", `${path}: the top level must be a mapping of keys`);
  }
  return validateConfig(raw as Record<string, unknown>, path, text);
}

export function validateConfig(raw: Record<string, unknown>, path: string, text: string): Config {
  const lines = keyLines(text);
  const fail = (key: string, reason: string): never => {
    const line = lines.get(key);
    const where = path ? `${path}${line ? `:${line}` : ""}: ` : "";
    throw new TracerError("CONFIG", `${where}key "${key}": ${reason}`, { file: path, key, line });
  };
  const cfg = readObject(SCHEMA, raw, "", fail, lines) as unknown as Config;
  cfg.source = path;
  crossChecks(cfg, fail);
  return cfg;
}

type Fail = (key: string, reason: string) => never;

function readObject(
  fields: Record<string, FieldSpec>,
  raw: Record<string, unknown>,
  prefix: string,
  fail: Fail,
  lines: Map<string, number>,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(raw)) {
    if (!Object.hasOwn(fields, k)) { // not `in`: "constructor", "__proto__" are no keys of ours
      const known = Object.keys(fields).join(", ");
      fail(prefix + k, `unknown key (known here: ${known})`);
    }
  }
  for (const [k, spec] of Object.entries(fields)) {
    const v = Object.hasOwn(raw, k) ? raw[k] : undefined;
    const value = readField(spec, v, prefix + k, fail, lines);
    if (value !== undefined) out[k] = value;
  }
  return out;
}

function readField(spec: FieldSpec, v: unknown, key: string, fail: Fail, lines: Map<string, number>): unknown {
  if (v === undefined || v === null) {
    switch (spec.t) {
      case "object": return readObject(spec.fields, {}, key + ".", fail, lines);
      case "list": return [];
      case "map": return {};
      case "string[]": case "int[]": return spec.def ? [...spec.def] : [];
      default: return spec.def;
    }
  }
  switch (spec.t) {
    case "string":
      if (typeof v === "number" || typeof v === "boolean") return String(v);
      if (typeof v !== "string") fail(key, `must be a string, got ${describe(v)}`);
      return v;
    case "int": {
      const n = typeof v === "string" && /^\d+$/.test(v) ? Number(v) : v;
      if (typeof n !== "number" || !Number.isInteger(n)) fail(key, `must be a whole number, got ${describe(v)}`);
      const num = n as number;
      if (spec.min !== undefined && num < spec.min) fail(key, `must be at least ${spec.min}, got ${num}`);
      if (spec.max !== undefined && num > spec.max) fail(key, `must be at most ${spec.max}, got ${num}`);
      return num;
    }
    case "number": {
      const n = typeof v === "string" && /^\d+(\.\d+)?$/.test(v) ? Number(v) : v;
      if (typeof n !== "number" || !Number.isFinite(n)) fail(key, `must be a number, got ${describe(v)}`);
      const num = n as number;
      if (spec.min !== undefined && num < spec.min) fail(key, `must be at least ${spec.min}, got ${num}`);
      if (spec.max !== undefined && num > spec.max) fail(key, `must be at most ${spec.max}, got ${num}`);
      return num;
    }
    case "bool":
      if (typeof v !== "boolean") fail(key, `must be true or false, got ${describe(v)}`);
      return v;
    case "duration": {
      const ms = parseDuration(v, key, fail);
      if (spec.min !== undefined && ms < spec.min) fail(key, `must be at least ${spec.min} ms`);
      return ms;
    }
    case "enum":
      if (typeof v !== "string" || !spec.values.includes(v)) fail(key, `must be one of ${spec.values.join(" | ")}, got ${describe(v)}`);
      return v;
    case "string[]": {
      const arr = typeof v === "string" ? [v] : v;
      if (!Array.isArray(arr) || arr.some((x) => typeof x !== "string" && typeof x !== "number")) fail(key, `must be a list of strings, got ${describe(v)}`);
      return (arr as unknown[]).map(String);
    }
    case "int[]": {
      const arr = typeof v === "number" ? [v] : v;
      if (!Array.isArray(arr) || arr.some((x) => typeof x !== "number" || !Number.isInteger(x) || x < 0)) fail(key, `must be a list of whole numbers, got ${describe(v)}`);
      return arr;
    }
    case "map": {
      if (typeof v !== "object" || Array.isArray(v)) fail(key, `must be a mapping of names to values, got ${describe(v)}`);
      const out: Record<string, string> = {};
      for (const [mk, mv] of Object.entries(v as object)) {
        if (typeof mv === "object" && mv !== null) fail(`${key}.${mk}`, `must be a plain value, got ${describe(mv)}`);
        out[mk] = String(mv);
      }
      return out;
    }
    case "object":
      if (typeof v !== "object" || Array.isArray(v)) fail(key, `must be a mapping, got ${describe(v)}`);
      return readObject(spec.fields, v as Record<string, unknown>, key + ".", fail, lines);
    case "list": {
      if (!Array.isArray(v)) fail(key, `must be a list, got ${describe(v)}`);
      return (v as unknown[]).map((item, i) => {
        const ik = `${key}[${i}]`;
        if (typeof item !== "object" || item === null || Array.isArray(item)) fail(ik, `must be a mapping, got ${describe(item)}`);
        const o = readObject(spec.item, item as Record<string, unknown>, ik + ".", fail, lines);
        if (Object.keys(o).length === 0) fail(ik, "is empty: give at least one selector");
        const line = lines.get(ik);
        if (line) o.line = line;
        return o;
      });
    }
  }
}

function crossChecks(cfg: Config, fail: Fail): void {
  const e = cfg.exporter;
  if (!(e === "otlp" || e === "stdout" || (e.startsWith("file:") && e.length > 5))) {
    fail("exporter", `must be otlp, stdout or file:PATH, got "${e}"`);
  }
  const r = cfg.agent_config.reporting;
  if (e === "otlp" && r.endpoint === "") {
    // An OTLP exporter with no endpoint is allowed only for capture-only use; main decides.
  }
  if ((r.cert_file === "") !== (r.key_file === "")) {
    fail(r.cert_file ? "agent_config.reporting.key_file" : "agent_config.reporting.cert_file", "cert_file and key_file go together (mutual TLS needs both)");
  }
  if (cfg.perfmap_queue_size & (cfg.perfmap_queue_size - 1)) {
    fail("perfmap_queue_size", `must be a power of two (pages per CPU), got ${cfg.perfmap_queue_size}`);
  }
  cfg.routes.forEach((r, i) => {
    if (!r.patterns.length) fail(`routes[${i}].patterns`, "give at least one pattern");
    r.patterns.forEach((p, j) => {
      const why = routePatternProblem(p);
      if (why) fail(`routes[${i}].patterns[${j}]`, `${JSON.stringify(p)} ${why}`);
    });
  });
  redactChecks(cfg.data_capture.redact, fail);
  adminChecks(cfg.admin, fail);
  cfg.custom_ssl_address.forEach((c, i) => {
    if (!c.binary || !c.binary.startsWith("/")) fail(`custom_ssl_address[${i}].binary`, "give the absolute path of the binary as the process maps it");
    if (c.ssl_read === undefined) fail(`custom_ssl_address[${i}].ssl_read`, "is required (the address of SSL_read, as nm prints it)");
    if (c.ssl_write === undefined) fail(`custom_ssl_address[${i}].ssl_write`, "is required (the address of SSL_write, as nm prints it)");
  });
  cfg.uprobe_attach_exclusion_rules.forEach((r, i) => {
    if (r.exe !== undefined && !r.exe.startsWith("/")) fail(`uprobe_attach_exclusion_rules[${i}].exe`, `must be an absolute executable path, got "${r.exe}"`);
  });
  cfg.targets.forEach((t, i) => {
    if (t.cmdline !== undefined) {
      try {
        new RegExp(t.cmdline);
      } catch (err) {
        fail(`targets[${i}].cmdline`, `not a valid regular expression: ${(err as Error).message}`);
      }
    }
  });
}

/** Why `p` is not a usable route pattern (`/a/{name}/b`, `/static/*`), or undefined when it is. */
export function routePatternProblem(p: string): string | undefined {
  if (!p.startsWith("/")) return "must start with /";
  const segs = p.split("/").slice(1);
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i]!;
    if (s === "*" && i !== segs.length - 1) return "* may only be the last segment";
    if (/[{}]/.test(s) && !/^\{[A-Za-z0-9_.-]+\}$/.test(s)) return `segment "${s}": a placeholder is a whole segment like {id}`;
  }
  return undefined;
}

const HEADER_GLOB = /^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/;

function redactChecks(r: RedactConfig, fail: Fail): void {
  const k = "data_capture.redact.";
  r.headers.forEach((h, i) => {
    if (!HEADER_GLOB.test(h)) fail(`${k}headers[${i}]`, `not a header name (letters, digits, "-", "*" as a wildcard), got ${JSON.stringify(h)}`);
  });
  r.fields.forEach((f, i) => {
    if (f.trim() === "" || /^[*]+$/.test(f)) fail(`${k}fields[${i}]`, `must name something (a lone "*" would redact every field), got ${JSON.stringify(f)}`);
  });
  r.value_patterns.forEach((p, i) => {
    if (!(REDACT_PATTERN_NAMES as readonly string[]).includes(p)) fail(`${k}value_patterns[${i}]`, `unknown pattern ${JSON.stringify(p)} (known: ${REDACT_PATTERN_NAMES.join(", ")}; use custom_patterns for regular expressions)`);
  });
  r.custom_patterns.forEach((p, i) => {
    let re: RegExp;
    try {
      re = new RegExp(p, "g");
    } catch (err) {
      return fail(`${k}custom_patterns[${i}]`, `not a valid regular expression: ${(err as Error).message}`);
    }
    if (re.test("")) fail(`${k}custom_patterns[${i}]`, `matches the empty string, so it would redact nothing useful and everything around it: ${JSON.stringify(p)}`);
    // Patterns run on every captured body, which the traffic's sender controls: a quantified
    // group that itself ends in a quantifier ("(a+)+", "(\\w*)*") can take exponential time.
    if (/\((?:[^()\\]|\\.)*[+*}]\)[+*{]/.test(p)) fail(`${k}custom_patterns[${i}]`, `has a repeated group that ends in a repetition (like "(a+)+"), which can take exponential time on hostile input: ${JSON.stringify(p)}`);
  });
  if (r.mode === "hash" && r.key_file === "") fail(`${k}key_file`, "hash mode needs a key file path");
}

/** True for 127.0.0.0/8, ::1 and localhost: the only admin addresses allowed without opt-in. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) || /^::ffff:127\./.test(h);
}

function adminChecks(a: Config["admin"], fail: Fail): void {
  if (!a.enabled) return;
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):\d{1,5}$/.exec(a.address.trim());
  if (!m) fail("admin.address", `must be HOST:PORT like 127.0.0.1:9464, got ${JSON.stringify(a.address)}`);
  const host = m![1] ?? m![2] ?? "";
  if (isLoopbackHost(host)) return;
  if (!a.allow_remote) fail("admin.address", `${a.address} is not a loopback address: /status and /metrics would be reachable from the network; set admin.allow_remote: true and admin.bearer_token to allow it`);
  if (a.bearer_token.length < 16) fail("admin.bearer_token", "a non-loopback admin.address needs a bearer token of at least 16 characters");
}

function parseDuration(v: unknown, key: string, fail: Fail): number {
  if (typeof v === "number" && v >= 0) return Math.round(v * 1000);
  if (typeof v === "string") {
    const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(v);
    if (m) {
      const n = Number(m[1]);
      const mult = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? "s") as "ms" | "s" | "m" | "h"];
      return Math.round(n * mult);
    }
  }
  return fail(key, `must be a duration like "500ms", "5s" or "1m", got ${describe(v)}`);
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return "a list";
  if (v === null) return "null";
  if (typeof v === "object") return "a mapping";
  const s = JSON.stringify(v) ?? String(v);
  return `${typeof v} ${s.length > 80 ? `${s.slice(0, 77)}…` : s}`;
}

/**
 * Maps dotted keys ("a.b", "targets[1]", "targets[1].exe") to 1-based line numbers by reading
 * the YAML text's indentation. Only used for messages, so an approximation is acceptable; TOML
 * gets "section.key" lines the same way.
 */
export function keyLines(text: string): Map<string, number> {
  const out = new Map<string, number>();
  const stack: { indent: number; key: string; listCount: number }[] = [];
  let tomlSection = "";
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    // a comment starts at whitespace + "#"; found without a backtracking \s+ (a line of many
    // spaces would cost quadratic time)
    const raw = lines[i]!;
    const hash = raw.search(/\s#/);
    const line = hash < 0 ? raw : raw.slice(0, hash);
    if (/^\s*(#|$)/.test(line)) continue;
    const toml = /^\s*\[([A-Za-z0-9_.]+)\]\s*$/.exec(line);
    if (toml) { tomlSection = toml[1]! + "."; out.set(toml[1]!, i + 1); continue; }
    const m = /^(\s*)(-\s+)?([A-Za-z0-9_."'-]+)\s*[:=]/.exec(line);
    const dash = /^(\s*)-(\s|$)/.exec(line);
    const indent = (m ?? dash)?.[1]?.length ?? 0;
    // A dash at the indent of its list's key is an item of that list; one at the indent of a
    // previous item is its sibling.
    while (stack.length && stack[stack.length - 1]!.indent >= indent && !(m?.[2] === undefined && dash && stack[stack.length - 1]!.indent === indent && !stack[stack.length - 1]!.key.endsWith("]"))) stack.pop();
    const parent = stack.length ? stack[stack.length - 1]!.key : "";
    let base = parent;
    if (dash) {
      const owner = stack.length ? stack[stack.length - 1]! : undefined;
      const idx = owner ? owner.listCount++ : 0;
      base = `${parent}[${idx}]`;
      out.set(base, i + 1);
      stack.push({ indent, key: base, listCount: 0 });
    }
    if (m) {
      const name = m[3]!.replace(/^["']|["']$/g, "");
      const key = (base ? base + "." : tomlSection) + name;
      out.set(key, i + 1);
      stack.push({ indent: indent + (m[2]?.length ?? 0), key, listCount: 0 });
    }
  }
  return out;
}
