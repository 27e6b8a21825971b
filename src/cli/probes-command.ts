/**
 * `ebpf-tracer probes`: lists the BPF programs a running agent attached, from its admin endpoint
 * (GET /probes), so an operator can audit what is loaded on the host. Exit 0 with the list,
 * 1 when the endpoint answers an error, 3 when nothing answers (as `status`).
 */
import type { ProbeInfo } from "./admin-server.ts";
import { adminHeaders, connectUrl, STATUS_DEGRADED, STATUS_NOT_RUNNING, STATUS_OK } from "./status-command.ts";

/** One line per probe: kind, attach point, target (uprobes), object hash prefix, program. */
export function formatProbes(probes: ProbeInfo[]): string {
  if (probes.length === 0) return "no probes attached\n";
  const rows = probes.map((p) => [p.kind, p.attach_point, p.target ?? "-", p.object_sha256 ? p.object_sha256.slice(0, 16) : "-", p.program, p.attached_at ?? "-"]);
  const head = ["KIND", "ATTACH POINT", "TARGET", "OBJECT SHA256", "PROGRAM", "ATTACHED"];
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(width[i]!))).join("  ").trimEnd() + "\n";
  return line(head) + rows.map(line).join("");
}

export async function probesCommand(address: string, opts: { json?: boolean; token?: string; timeoutMs?: number } = {}): Promise<number> {
  const base = connectUrl(address);
  let res: Response;
  try {
    res = await fetch(`${base}/probes`, { signal: AbortSignal.timeout(opts.timeoutMs ?? 3000), headers: adminHeaders(opts.token) });
  } catch (e) {
    const why = (e as Error)?.name === "TimeoutError" ? "no answer" : ((e as { code?: string }).code ?? (e as Error).message);
    process.stdout.write(`ebpf-tracer: not running (admin endpoint ${base}: ${why})\n`);
    return STATUS_NOT_RUNNING;
  }
  if (!res.ok) {
    process.stdout.write(`ebpf-tracer: ${base}/probes answered ${res.status}${res.status === 401 ? " (admin.bearer_token needed)" : ""}\n`);
    return STATUS_DEGRADED;
  }
  const body = (await res.json()) as { probes?: ProbeInfo[] };
  const probes = Array.isArray(body.probes) ? body.probes : [];
  process.stdout.write(opts.json ? JSON.stringify(probes, null, 2) + "\n" : formatProbes(probes));
  return STATUS_OK;
}
