/**
 * The readable line `capture` prints per API call (without --json), written through
 * StdoutExporter like the JSON lines.
 */
import { allAttributes, type Span } from "../spans/span.ts";

export function formatSpanLine(s: Span): string {
  const a = allAttributes(s);
  const ms = (Number(s.endTimeUnixNano - s.startTimeUnixNano) / 1e6).toFixed(1);
  const status = a["http.response.status_code"] ?? "---";
  const peer = `${a["network.peer.address"] ?? ""}${a["network.peer.port"] ? ":" + a["network.peer.port"] : ""}`;
  const arrow = s.kind === "server" ? "<-" : "->";
  const q = a["url.query"] ? `?${a["url.query"]}` : "";
  const flags = [a["ebpf.partial"] ? "partial" : "", a["http.request.body.truncated"] || a["http.response.body.truncated"] ? "truncated" : ""].filter(Boolean).join(",");
  const time = new Date(Number(s.startTimeUnixNano / 1_000_000n)).toISOString().slice(11, 23);
  return `${time} ${s.kind === "server" ? "IN " : "OUT"} ${a["process.executable.name"]}[${a["process.pid"]}] ${arrow} ${peer} ${a["http.request.method"]} ${a["url.path"]}${q} ${status} ${ms}ms req=${a["http.request.body.size"]}B res=${a["http.response.body.size"] ?? 0}B${flags ? " " + flags : ""}`;
}
