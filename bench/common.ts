/** What the live benchmarks share: their command-line options and the keep-alive Node server
 * the overhead, memory and profile benchmarks load. */
import type { Subprocess } from "bun";
import { resolve } from "node:path";
import { cpuQuotaCgroup, inCgroup, startNode, type Server } from "../test/support/servers.ts";
import { unitEnvironment, unitLimits } from "../test/support/unit-env.ts";

/** The value after option `name` on the command line, else `dflt`. */
export function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : dflt;
}

/** --bins label=PATH,label=PATH: the agent builds to compare, each run in every round; by default
 * the checkout's build with an empty label. */
export function binsArg(): [string, string][] {
  return arg("--bins", `=${resolve(import.meta.dir, "../dist/ebpf-tracer")}`).split(",").map((b) => {
    const i = b.indexOf("=");
    return [b.slice(0, i), resolve(b.slice(i + 1))];
  });
}

/** The middle value (the upper one of an even count). */
export function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
}

/** `wrk -t1 -cCONNS -dSECONDSs url`: its requests/s and request count. */
export async function wrk(url: string, seconds: number, conns = 16, env: Record<string, string | undefined> = process.env): Promise<{ rps: number; requests: number }> {
  const p = Bun.spawn(["wrk", "-t1", `-c${conns}`, `-d${seconds}s`, url], { stdout: "pipe", stderr: "pipe", env });
  const out = await new Response(p.stdout).text();
  await p.exited;
  return { rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]), requests: Number(/(\d+) requests in/.exec(out)?.[1]) };
}

/** A process spawned by spawnReady: its stderr so far (drained as it comes). */
export interface Started {
  proc: Subprocess;
  stderr: () => string;
}

/** Spawns `cmd` and resolves once its stderr contains `ready`; throws when it exits or 20 s pass first. */
export async function spawnReady(cmd: string[], ready: string, opts: { stdout?: "pipe" | "ignore"; env?: Record<string, string | undefined> } = {}): Promise<Started> {
  const proc = Bun.spawn(cmd, { stdin: "ignore", stdout: opts.stdout ?? "ignore", stderr: "pipe", env: opts.env ?? process.env });
  let err = "";
  (async () => {
    const dec = new TextDecoder();
    for await (const c of proc.stderr as ReadableStream<Uint8Array>) err += dec.decode(c, { stream: true });
  })();
  const deadline = Date.now() + 20_000;
  while (!err.includes(ready)) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`${cmd[0]} did not start: ${err}`);
    }
    await Bun.sleep(20);
  }
  return { proc, stderr: () => err };
}

/** A keep-alive Node HTTP server answering every request with the same ~250-byte JSON. */
export function startJsonServer(): Promise<Server> {
  const body = JSON.stringify({ ok: true, items: [1, 2, 3], note: "x".repeat(200) });
  return startNode(`const body = ${JSON.stringify(body)};
require("http").createServer((req, res) => { res.writeHead(200, { "content-type": "application/json" }); res.end(body); })
  .listen(Number(process.env.PORT), process.env.HOST);`);
}

/**
 * The environment the systemd unit gives the agent (its `Environment=` lines, e.g. the JS
 * engine's heap growth limit): the benchmarks measure the agent as it is deployed. `--no-unit-env`
 * runs it with the plain environment instead.
 */
export function unitEnv(): Record<string, string> {
  return process.argv.includes("--no-unit-env") ? {} : unitEnvironment();
}

/** process.env plus unitEnv(): what to spawn the agent with. */
export function agentEnv(): Record<string, string | undefined> {
  return { ...process.env, ...unitEnv() };
}

let quotaProcs: string | undefined;

/**
 * `--as-unit`: `cmd` wrapped so that the agent also runs under the unit's `CPUQuota=` and `Nice=`,
 * as systemd would run it: in a cpu cgroup whose quota is that share of one core per 100 ms
 * (cgroup v2 `cpu.max` where the unified hierarchy is mounted at /sys/fs/cgroup, else the v1 cpu
 * controller's `cpu.cfs_quota_us`), through `nice`. The shell execs the agent, so the pid the
 * benchmark measures is the agent's. Without the option, `cmd` unchanged.
 */
export function asUnit(cmd: string[]): string[] {
  if (!process.argv.includes("--as-unit")) return cmd;
  const { cpuQuotaPercent, nice } = unitLimits();
  quotaProcs ??= quotaCgroup(cpuQuotaPercent, nice);
  return inCgroup(quotaProcs, nice ? ["nice", "-n", String(nice), ...cmd] : cmd);
}

function quotaCgroup(percent: number | undefined, nice: number | undefined): string {
  const cg = cpuQuotaCgroup("ebpf-tracer-bench", percent);
  console.log(`--as-unit: the agent runs in ${cg.dir} (CPUQuota ${percent ?? "none"} %) under nice ${nice ?? 0}`);
  return cg.procs;
}
