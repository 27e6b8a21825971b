/**
 * The TLS coverage report: per selected process, which TLS stacks it has, how many probes are
 * attached, how many of its TLS connections showed plaintext, and why not where not. Fed by
 * discovery (TlsDiscovery), by the attach plan (probe results) and by the connection stream
 * (a connection flagged TLS by the kernel, TLS-layer data on it, its close). Pure bookkeeping: no
 * I/O, so `ebpf-tracer status`, the admin /status, the log and the metrics all read one state.
 */
import type { ProcessTls, TlsStack } from "./discover.ts";

export type CoverageState = "decrypting" | "partial" | "not-decrypting" | "no-tls" | "excluded" | "disabled";

export interface StackCoverage {
  kind: string;
  version?: string;
  path: string;
  decryptable: boolean;
  reason?: string;
  probes: { wanted: number; attached: number; errors: string[] };
}

export interface TlsCoverage {
  pid: number;
  comm: string;
  exe?: string;
  stacks: StackCoverage[];
  connections: {
    /** connections the kernel flagged as TLS (ciphertext seen) */
    tls: number;
    /** TLS connections with TLS-layer plaintext */
    decrypted: number;
    /** … of which only through inferred correlation (memory BIO) */
    inferred: number;
    /** TLS connections closed without any plaintext */
    notDecrypted: number;
  };
  state: CoverageState;
  reasons: string[];
}

interface ProcState {
  cov: TlsCoverage;
  /** conn id → bit 0: TLS seen, bit 1: plaintext seen, bit 2: exact plaintext seen */
  conns: Map<bigint, number>;
  lastLine?: string;
}

/** Probes a stack needs: one per entry/return, one per RET for Go. */
function probeCount(s: TlsStack): number {
  return s.probes.reduce((n, p) => n + (p.kind === "ret-offsets" ? (p.retOffsets?.length ?? 0) : 1), 0);
}

export class TlsCoverageBook {
  private readonly procs = new Map<number, ProcState>();

  /** `enabled`: config enable_uprobes. */
  constructor(private readonly enabled: boolean) {}

  /**
   * Records a discovery result (at start, exec, or a new executable mapping). Returns the log line
   * to write when the process's TLS summary changed, else undefined.
   */
  setProcess(comm: string, d: ProcessTls): string | undefined {
    const st = this.state(d.pid, comm);
    st.cov.exe = d.exe;
    const old = new Map(st.cov.stacks.map((s) => [s.path, s]));
    st.cov.stacks = d.stacks.map((s) => ({
      kind: s.kind,
      version: s.version,
      path: s.path,
      decryptable: this.enabled && s.decryptable,
      reason: this.enabled ? s.reason : "enable_uprobes is false",
      probes: old.get(s.path)?.probes ?? { wanted: this.enabled && s.decryptable ? probeCount(s) : 0, attached: 0, errors: [] },
    }));
    const reasons: string[] = [];
    if (d.excludedBy) reasons.push(`excluded by ${d.excludedBy}`);
    for (const e of d.errors) reasons.push(`${e.path}: ${e.reason}`);
    st.cov.reasons = reasons;
    return this.refresh(st, d.excludedBy !== undefined);
  }

  /** The attach plan's result for one probe of the stack at `path` in process `pid`. */
  probeResult(pid: number, path: string, error?: string): string | undefined {
    const st = this.procs.get(pid);
    const s = st?.cov.stacks.find((x) => x.path === path);
    if (!st || !s) return undefined;
    if (error) s.probes.errors.push(error);
    else s.probes.attached++;
    return this.refresh(st);
  }

  /** The kernel flagged connection `conn` of `pid` as TLS. */
  tlsConnection(pid: number, comm: string, conn: bigint): string | undefined {
    const st = this.state(pid, comm);
    const f = st.conns.get(conn) ?? 0;
    if (!(f & 1)) st.cov.connections.tls++;
    st.conns.set(conn, f | 1);
    return this.refresh(st);
  }

  /** TLS-layer plaintext arrived on `conn` (`inferred`: correlation through the thread's socket). */
  plaintext(pid: number, comm: string, conn: bigint, inferred: boolean): string | undefined {
    const st = this.state(pid, comm);
    const f = st.conns.get(conn) ?? 0;
    const c = st.cov.connections;
    if (!(f & 1)) c.tls++; // plaintext makes it a TLS connection even when the kernel flag is late
    if (!(f & 2)) {
      c.decrypted++;
      if (inferred) c.inferred++;
    } else if (!(f & 4) && !inferred) {
      c.inferred--; // was inferred only; an exact correlation makes it exact
    }
    st.conns.set(conn, f | 1 | 2 | (inferred ? 0 : 4));
    return this.refresh(st);
  }

  /** `conn` closed: a TLS connection without plaintext counts as not decrypted. */
  closed(pid: number, conn: bigint): string | undefined {
    const st = this.procs.get(pid);
    const f = st?.conns.get(conn);
    if (!st || f === undefined) return undefined;
    st.conns.delete(conn);
    if (f & 1 && !(f & 2)) st.cov.connections.notDecrypted++;
    return this.refresh(st);
  }

  processGone(pid: number): void {
    this.procs.delete(pid);
  }

  snapshot(): TlsCoverage[] {
    return [...this.procs.values()].map((s) => structuredClone(s.cov)).sort((a, b) => a.pid - b.pid);
  }

  /** Prometheus text lines (no HELP/TYPE: the metrics endpoint owns those). */
  prometheus(prefix = "ebpf_tracer_tls"): string[] {
    const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
    const stacks = new Map<string, number>();
    const conns = new Map<string, number>();
    let attached = 0;
    for (const { cov } of this.procs.values()) {
      for (const s of cov.stacks) {
        const k = `kind="${esc(s.kind)}",decryptable="${s.decryptable}"`;
        stacks.set(k, (stacks.get(k) ?? 0) + 1);
        attached += s.probes.attached;
      }
      const exe = esc(cov.exe ?? cov.comm);
      const c = cov.connections;
      for (const [outcome, n] of [["decrypted", c.decrypted - c.inferred], ["inferred", c.inferred], ["not_decrypted", c.notDecrypted]] as const) {
        const k = `exe="${exe}",outcome="${outcome}"`;
        conns.set(k, (conns.get(k) ?? 0) + n);
      }
    }
    return [
      ...[...stacks].map(([k, n]) => `${prefix}_stacks{${k}} ${n}`),
      `${prefix}_probes_attached ${attached}`,
      ...[...conns].map(([k, n]) => `${prefix}_connections_total{${k}} ${n}`),
    ];
  }

  private state(pid: number, comm: string): ProcState {
    let st = this.procs.get(pid);
    if (!st) {
      st = { cov: { pid, comm, stacks: [], connections: { tls: 0, decrypted: 0, inferred: 0, notDecrypted: 0 }, state: "no-tls", reasons: [] }, conns: new Map() };
      this.procs.set(pid, st);
    }
    st.cov.comm = comm || st.cov.comm;
    return st;
  }

  private refresh(st: ProcState, excluded = st.cov.reasons.some((r) => r.startsWith("excluded by "))): string | undefined {
    const c = st.cov;
    const anyTls = c.stacks.length > 0 || c.connections.tls > 0;
    const decryptable = c.stacks.some((s) => s.decryptable);
    const missed = c.connections.notDecrypted > 0 || c.stacks.some((s) => !s.decryptable) || c.stacks.some((s) => s.probes.errors.length > 0);
    c.state = !this.enabled && anyTls ? "disabled" : excluded && anyTls ? "excluded" : !anyTls ? "no-tls" : !decryptable ? "not-decrypting" : missed ? "partial" : "decrypting";
    const line = coverageLine(c);
    if (line === st.lastLine) return undefined;
    st.lastLine = line;
    return c.state === "no-tls" && !c.stacks.length ? undefined : line;
  }
}

/** "TLS capture for nginx[1234]: openssl 3.0.19 /usr/lib/…/libssl.so.3, decrypting" */
export function coverageLine(c: TlsCoverage): string {
  const stacks = c.stacks.map((s) => `${s.kind}${s.version ? ` ${s.version}` : ""} ${s.path}${s.decryptable ? "" : ` (${s.reason ?? "not decryptable"})`}`);
  const what = stacks.length ? stacks.join("; ") : "no TLS library found";
  const extra = c.connections.notDecrypted ? ` (${c.connections.notDecrypted} TLS connection(s) without plaintext)` : "";
  return `TLS capture for ${c.comm}[${c.pid}]: ${what}, ${c.state.replace("-", " ")}${extra}`;
}
