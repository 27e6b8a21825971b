/**
 * RED metrics in the Prometheus text format 0.0.4, the way OpenTelemetry's Prometheus exporter
 * names them: dots become underscores and the unit is appended (`http.server.request.duration`
 * in s → `http_server_request_duration_seconds`, By → `_bytes`, ms → `_milliseconds`).
 * Histograms as `_bucket{le=…}` (cumulative, ending with `+Inf`), `_sum` and `_count`; resource
 * and data-point attributes become labels (`service.name` → `service_name`). A histogram with
 * no observation (e.g. sizes of a series that never had a body size) is left out.
 */
import type { AttrValue } from "../spans/span.ts";
import type { RedSnapshot, Series } from "./red.ts";

const UNIT_SUFFIX: Record<string, string> = { s: "_seconds", ms: "_milliseconds", By: "_bytes" };

export function promName(name: string, unit: string): string {
  return name.replace(/[^A-Za-z0-9_]/g, "_") + (UNIT_SUFFIX[unit] ?? "");
}

export function promLabelName(name: string): string {
  const n = name.replace(/[^A-Za-z0-9_]/g, "_");
  return /^[0-9]/.test(n) ? `_${n}` : n;
}

export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function promNumber(v: number): string {
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return Number.isNaN(v) ? "NaN" : String(v);
}

function labelsOf(s: Series): string {
  const parts: string[] = [];
  const add = (k: string, v: AttrValue) => parts.push(`${promLabelName(k)}="${escapeLabelValue(String(v))}"`);
  for (const [k, v] of Object.entries(s.resource)) add(k, v);
  for (const [k, v] of Object.entries(s.attributes)) add(k, v);
  return parts.join(",");
}

/** The exposition text of every non-empty histogram of the snapshot. */
export function renderRedPrometheus(snap: RedSnapshot): string {
  const families = new Map<string, { help: string; lines: string[] }>();
  for (const s of snap.series) {
    const labels = labelsOf(s);
    const sep = labels ? "," : "";
    for (let i = 0; i < 3; i++) {
      const h = s.histograms[i]!;
      if (h.count === 0) continue;
      const ins = s.instruments[i]!;
      const name = promName(ins.name, ins.unit);
      let f = families.get(name);
      if (!f) families.set(name, (f = { help: `${ins.description} (${ins.name}, unit ${ins.unit})`, lines: [] }));
      let cum = 0;
      for (let b = 0; b < h.bounds.length; b++) {
        cum += h.counts[b]!;
        f.lines.push(`${name}_bucket{${labels}${sep}le="${promNumber(h.bounds[b]!)}"} ${cum}`);
      }
      f.lines.push(`${name}_bucket{${labels}${sep}le="+Inf"} ${h.count}`);
      f.lines.push(`${name}_sum${labels ? `{${labels}}` : ""} ${promNumber(h.sum)}`);
      f.lines.push(`${name}_count${labels ? `{${labels}}` : ""} ${h.count}`);
    }
  }
  let out = "";
  for (const [name, f] of families) out += `# HELP ${name} ${f.help}\n# TYPE ${name} histogram\n${f.lines.join("\n")}\n`;
  return out;
}

/** One parsed sample line of the text format (used by `top`). */
export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses sample lines of the text format; comments and malformed lines are skipped. */
export function parsePrometheus(text: string): PromSample[] {
  const out: PromSample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    if (m[2]) {
      for (const l of m[2].matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
        labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_x, c: string) => (c === "n" ? "\n" : c));
      }
    }
    const v = m[3] === "+Inf" ? Infinity : m[3] === "-Inf" ? -Infinity : Number(m[3]);
    out.push({ name: m[1]!, labels, value: v });
  }
  return out;
}
