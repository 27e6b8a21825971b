/**
 * `ebpf-tracer apis`: the API inventory the agent keeps (src/metrics/inventory.ts), read from its
 * file (metrics.inventory_path of the config, or --file): a table for people, --json for
 * machines, --new-since DURATION for endpoints first seen recently. Exit 0, 1 when there is no
 * inventory file yet or it cannot be read.
 */
import { loadConfig } from "../config/config.ts";
import { TracerError } from "../errors.ts";
import { readInventoryFile, type ApiEntry } from "../metrics/inventory.ts";

export interface ApisOptions {
  config: string;
  file?: string;
  json?: boolean;
  newSince?: string;
  now?: number;
}

/** "90s", "15m", "2h", "7d", or plain seconds → ms. */
export function parseSince(v: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(v);
  if (!m) throw new TracerError("CONFIG", `--new-since: not a duration like 30m, 2h or 7d: ${JSON.stringify(v)}`);
  const mult = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? "s") as "ms"];
  return Number(m[1]) * mult;
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

export function entryJson(e: ApiEntry): Record<string, unknown> {
  return { ...e, firstSeen: iso(e.firstSeen), lastSeen: iso(e.lastSeen), transport: transportOf(e) };
}

function transportOf(e: ApiEntry): string {
  return e.tls && e.plaintext ? "tls+plain" : e.tls ? "tls" : "plain";
}

/** Fixed-width table; every column as wide as its widest cell. */
export function formatTable(entries: ApiEntry[]): string {
  const head = ["SERVICE", "DIR", "ROUTE", "METHODS", "STATUS", "COUNT", "FIRST SEEN", "LAST SEEN", "TLS", "AUTH", "SENSITIVE", "CONTENT TYPES"];
  const rows = entries.map((e) => [
    e.service, e.direction === "server" ? "in" : "out", e.route, e.methods.join(","), e.statusCodes.slice().sort((a, b) => a - b).join(","),
    String(e.count), iso(e.firstSeen), iso(e.lastSeen), transportOf(e), e.authSchemes.join(",") || "-", e.redacted ? "yes" : "-",
    [...new Set([...e.requestContentTypes, ...e.responseContentTypes])].join(",") || "-",
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join("  ");
  return [line(head), ...rows.map(line)].join("\n") + "\n";
}

export function apisCommand(o: ApisOptions): number {
  const path = o.file ?? loadConfig(o.config, true).metrics.inventory_path;
  if (!path) throw new TracerError("CONFIG", `${o.config}: key "metrics.inventory_path" is empty: no inventory is kept`);
  let doc: { savedAt: number; entries: ApiEntry[] };
  try {
    doc = readInventoryFile(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    process.stderr.write(code === "ENOENT" ? `ebpf-tracer: no API inventory at ${path} yet (the agent writes it while it runs)\n` : `ebpf-tracer: cannot read ${path}: ${code ?? (e as Error).message}\n`);
    return 1;
  }
  let entries = doc.entries;
  if (o.newSince !== undefined) {
    const since = (o.now ?? Date.now()) - parseSince(o.newSince);
    entries = entries.filter((e) => e.firstSeen >= since);
  }
  entries = entries.slice().sort((a, b) => a.service.localeCompare(b.service) || a.direction.localeCompare(b.direction) || a.route.localeCompare(b.route));
  if (o.json) process.stdout.write(JSON.stringify(entries.map(entryJson), null, 2) + "\n");
  else process.stdout.write(entries.length ? formatTable(entries) : "no APIs seen" + (o.newSince ? ` first seen in the last ${o.newSince}` : "") + "\n");
  return 0;
}
