/**
 * `ebpf-tracer status`: asks the running agent's admin endpoint (/status, /healthz) and prints
 * what it says readably. Exit codes follow the LSB `status` convention: 0 running and healthy,
 * 1 running but degraded (the reasons are printed), 3 not running (nothing answers at the address).
 */
export const STATUS_OK = 0;
export const STATUS_DEGRADED = 1;
export const STATUS_NOT_RUNNING = 3;

/** Where to connect for a listen address: all-interfaces addresses become loopback. */
export function connectUrl(address: string): string {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(address.trim());
  if (!m) return `http://${address}`;
  let host = m[1] ?? m[2] ?? "";
  if (host === "" || host === "0.0.0.0") host = "127.0.0.1";
  if (host === "::") host = "::1";
  return `http://${host.includes(":") ? `[${host}]` : host}:${m[3]}`;
}

/** Renders a status object as aligned "key: value" lines; nested objects are indented. */
export function formatStatus(obj: Record<string, unknown>, indent = ""): string {
  const keys = Object.keys(obj);
  const width = Math.max(0, ...keys.map((k) => k.length));
  let out = "";
  for (const k of keys) {
    const v = obj[k];
    const label = `${indent}${(k + ":").padEnd(width + 1)}`;
    const head = `${indent}${k}:`;
    if (v !== null && typeof v === "object" && !Array.isArray(v)) {
      const inner = formatStatus(v as Record<string, unknown>, indent + "  ");
      out += inner ? `${head}\n${inner}` : `${label} {}\n`;
    } else if (Array.isArray(v)) {
      if (v.length === 0) out += `${label} (none)\n`;
      else if (v.every((x) => x === null || typeof x !== "object")) out += `${label} ${v.join(", ")}\n`;
      else out += `${head}\n${v.map((x) => `${indent}  - ${typeof x === "object" ? JSON.stringify(x) : String(x)}`).join("\n")}\n`;
    } else {
      out += `${label} ${v === "" ? '""' : String(v)}\n`;
    }
  }
  return out;
}

function formatUptime(seconds: number): string {
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  return (d ? `${d}d ` : "") + (d || h ? `${h}h ` : "") + (d || h || m ? `${m}m ` : "") + `${s % 60}s`;
}

/** Request headers for the admin endpoint: the bearer token when the config sets one. */
export function adminHeaders(token?: string): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}

export async function statusCommand(address: string, timeoutMs = 3000, token?: string): Promise<number> {
  const base = connectUrl(address);
  let health: Response;
  let status: Record<string, unknown> = {};
  const headers = adminHeaders(token);
  try {
    health = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(timeoutMs), headers });
    const body = await health.text();
    const s = await fetch(`${base}/status`, { signal: AbortSignal.timeout(timeoutMs), headers });
    if (s.ok) status = (await s.json()) as Record<string, unknown>;
    else status = { error: `/status answered ${s.status}` };
    if (!("reasons" in status) && health.status !== 200) status.reasons = body.split("\n").slice(1).filter(Boolean);
  } catch (e) {
    const why = (e as Error)?.name === "TimeoutError" ? "no answer" : ((e as { code?: string }).code ?? (e as Error).message);
    process.stdout.write(`ebpf-tracer: not running (admin endpoint ${base}: ${why})\n`);
    return STATUS_NOT_RUNNING;
  }
  const healthy = health.status === 200;
  const reasons = Array.isArray(status.reasons) ? (status.reasons as unknown[]).map(String) : [];
  const rest: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(status)) {
    if (k === "healthy" || k === "reasons") continue;
    if (k === "uptime_seconds" && typeof v === "number") rest.uptime = formatUptime(v);
    else rest[k] = v;
  }
  let out = `ebpf-tracer: ${healthy ? "running, healthy" : `running, DEGRADED (${health.status})`}\n`;
  for (const r of reasons) out += `  ! ${r}\n`;
  out += formatStatus(rest);
  process.stdout.write(out);
  return healthy ? STATUS_OK : STATUS_DEGRADED;
}
