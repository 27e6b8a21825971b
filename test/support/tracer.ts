/**
 * Drives the compiled binary in integration tests: `ebpf-tracer capture --json ...` as a child
 * process, collecting the JSON span lines it prints.
 */
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import type { Subprocess } from "bun";

export const ROOT = resolve(import.meta.dir, "../..");
export const BIN = resolve(ROOT, "dist/ebpf-tracer");

/** Why root-only tests cannot run here, or undefined when they can. */
export function rootSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (loads BPF programs)";
  if (!existsSync(BIN)) return "dist/ebpf-tracer is not built (bun run build)";
  if (!existsSync("/sys/kernel/btf/vmlinux")) return "kernel has no BTF at /sys/kernel/btf/vmlinux";
  return undefined;
}

export interface SpanJson {
  name: string;
  kind: "server" | "client";
  traceId: string;
  spanId: string;
  start: string;
  durationMs: number;
  error: boolean;
  attributes: Record<string, string | number | boolean>;
  resource: Record<string, string | number | boolean>;
}

async function readLines(stream: ReadableStream<Uint8Array>, onLine: (l: string) => void): Promise<void> {
  const dec = new TextDecoder();
  let buf = "";
  for await (const chunk of stream) {
    buf += dec.decode(chunk, { stream: true });
    let i: number;
    while ((i = buf.indexOf("\n")) >= 0) {
      onLine(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  }
  if (buf) onLine(buf);
}

export class TracerProcess {
  readonly spans: SpanJson[] = [];
  readonly stdoutLines: string[] = [];
  stderr = "";
  private done: Promise<number>;
  private constructor(readonly proc: Subprocess<"ignore", "pipe", "pipe">) {
    const out = readLines(proc.stdout, (l) => {
      this.stdoutLines.push(l);
      if (l.startsWith("{")) {
        try {
          this.spans.push(JSON.parse(l));
        } catch {
          /* not a span line */
        }
      }
    });
    const err = readLines(proc.stderr, (l) => {
      this.stderr += l + "\n";
    });
    this.done = Promise.all([out, err, proc.exited]).then(([, , code]) => code);
  }

  /** Starts the binary with `args` and resolves once it says it is capturing. `prefix`: a
   * command that execs the binary (e.g. servers.ts inCgroup(procs, [])). */
  static async start(args: string[], readyText = "capturing", timeoutMs = 20_000, prefix: string[] = []): Promise<TracerProcess> {
    const proc = Bun.spawn([...prefix, BIN, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    const t = new TracerProcess(proc);
    const deadline = Date.now() + timeoutMs;
    while (!t.stderr.includes(readyText)) {
      if (proc.exitCode !== null || Date.now() > deadline) {
        proc.kill("SIGKILL");
        throw new Error(`tracer did not start (exit ${proc.exitCode}): ${t.stderr}`);
      }
      await Bun.sleep(20);
    }
    return t;
  }

  static capture(args: string[]): Promise<TracerProcess> {
    return TracerProcess.start(["capture", "--json", ...args]);
  }

  /** Waits until at least `n` spans matching `pred` arrived; returns them. */
  async waitForSpans(n: number, pred: (s: SpanJson) => boolean = () => true, timeoutMs = 10_000): Promise<SpanJson[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const got = this.spans.filter(pred);
      if (got.length >= n || Date.now() > deadline) return got;
      await Bun.sleep(25);
    }
  }

  async stop(signal: "SIGINT" | "SIGTERM" = "SIGINT"): Promise<number> {
    this.proc.kill(signal);
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), 10_000);
    const code = await this.done;
    clearTimeout(timer);
    return code;
  }
}
