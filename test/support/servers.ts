/**
 * Real servers for integration tests, on loopback ports chosen per test run: Debian's python3
 * http.server, a Node http server, and nginx with a private config.
 */
import { chmodSync, existsSync, mkdtempSync, writeFileSync, mkdirSync, rmSync, rmdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";

// Below the kernel's ephemeral range (32768+), so client sockets never hold a test port; each
// candidate is bound once to make sure nothing else (another suite, a leftover server) has it.
let nextPort = 10000 + (process.pid % 20000);
export function port(): number {
  for (;;) {
    const p = nextPort++;
    if (nextPort >= 32000) nextPort = 10000;
    try {
      const probe = Bun.listen({ hostname: "0.0.0.0", port: p, socket: { data() {} } });
      probe.stop(true);
      return p;
    } catch {
      /* taken: try the next one */
    }
  }
}

export async function waitForPort(p: number, host = "127.0.0.1", timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const s = await Bun.connect({ hostname: host, port: p, socket: { data() {} } });
      s.end();
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`nothing listening on ${host}:${p}`);
      await Bun.sleep(50);
    }
  }
}

/** `cmd` run from inside a cgroup: a shell moves itself there (`procs`: the cgroup's
 * cgroup.procs) and execs `cmd`, so the spawned pid is `cmd`'s and its exec happens inside. */
export function inCgroup(procs: string, cmd: string[]): string[] {
  return ["/bin/sh", "-c", `echo $$ > ${procs} && exec "$@"`, "sh", ...cmd];
}

const QUOTA_PERIOD_US = 100_000;

/**
 * A cpu cgroup `name` whose processes get `percent` of one core per 100 ms (undefined: no limit),
 * as systemd's CPUQuota= sets it: cgroup v2 `cpu.max` where the unified hierarchy is mounted at
 * /sys/fs/cgroup, else the v1 cpu controller's `cpu.cfs_quota_us`. Undefined when neither is
 * there. `procs` is its cgroup.procs (for inCgroup); `remove()` deletes it once it is empty.
 */
export function cpuQuotaCgroup(name: string, percent: number | undefined): { dir: string; procs: string; remove(): void } {
  const quota = percent ? String(Math.round((percent / 100) * QUOTA_PERIOD_US)) : undefined;
  let dir: string;
  if (existsSync("/sys/fs/cgroup/cgroup.controllers")) {
    writeFileSync("/sys/fs/cgroup/cgroup.subtree_control", "+cpu");
    dir = `/sys/fs/cgroup/${name}`;
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "cpu.max"), `${quota ?? "max"} ${QUOTA_PERIOD_US}`);
  } else if (existsSync("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")) {
    dir = `/sys/fs/cgroup/cpu/${name}`;
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "cpu.cfs_period_us"), String(QUOTA_PERIOD_US));
    writeFileSync(join(dir, "cpu.cfs_quota_us"), quota ?? "-1");
  } else {
    throw new Error("no cpu cgroup controller (cgroup v2 at /sys/fs/cgroup or v1 at /sys/fs/cgroup/cpu)");
  }
  return {
    dir,
    procs: join(dir, "cgroup.procs"),
    remove: () => {
      try {
        rmdirSync(dir);
      } catch {
        /* still has processes, or gone */
      }
    },
  };
}

export interface Server {
  pid: number;
  port: number;
  dir: string;
  stop(): Promise<void>;
}

function wrap(proc: Subprocess, p: number, dir: string, extraStop?: () => void, graceful = false): Server {
  return {
    pid: proc.pid,
    port: p,
    dir,
    async stop() {
      extraStop?.();
      if (graceful && proc.exitCode === null) {
        // nginx: SIGTERM makes the master stop its workers; SIGKILL would orphan them (still listening).
        proc.kill("SIGTERM");
        await Promise.race([proc.exited, Bun.sleep(3000)]);
      }
      proc.kill("SIGKILL");
      await proc.exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function startPython(): Promise<Server> {
  const p = port();
  const dir = mkdtempSync(join(tmpdir(), "et-py-"));
  writeFileSync(join(dir, "hello.json"), JSON.stringify({ hello: "world" }));
  const proc = Bun.spawn(["/usr/bin/python3", "-m", "http.server", String(p), "--bind", "127.0.0.1"], { cwd: dir, stdout: "ignore", stderr: "ignore" });
  await waitForPort(p);
  return wrap(proc, p, dir);
}

/** A Node http server; `script` gets PORT in the environment and must listen on it. */
export async function startNode(script: string, host = "127.0.0.1"): Promise<Server> {
  const p = port();
  const dir = mkdtempSync(join(tmpdir(), "et-node-"));
  writeFileSync(join(dir, "server.js"), script);
  const proc = Bun.spawn(["/usr/bin/node", "server.js"], { cwd: dir, env: { ...process.env, PORT: String(p), HOST: host }, stdout: "ignore", stderr: "inherit" });
  await waitForPort(p, host);
  return wrap(proc, p, dir);
}

/**
 * An nginx configuration with a private prefix `dir` (the caller makes `dir/logs`): in the
 * foreground, no access log, every pid/log/temp path inside `dir`; `http` lines (directives,
 * server blocks) go inside http{}. The tests' servers and the live benchmarks use it.
 */
export function nginxConf(dir: string, http: string[], opts: { workers?: number; connections?: number } = {}): string {
  return `worker_processes ${opts.workers ?? 1};
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log;
events { worker_connections ${opts.connections ?? 1024}; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
${http.map((l) => `  ${l}`).join("\n")}
}
`;
}

/** nginx (Debian's) in the foreground with a private prefix; `serverBlock` goes inside http{}. */
export async function startNginx(serverBlock: (port: number, dir: string) => string, workers = 1): Promise<Server> {
  const p = port();
  const dir = mkdtempSync(join(tmpdir(), "et-nginx-"));
  chmodSync(dir, 0o755); // mkdtemp makes it 0700; the workers run as nobody and must read www/
  mkdirSync(join(dir, "www"));
  mkdirSync(join(dir, "logs"));
  writeFileSync(join(dir, "www", "index.html"), "<h1>hello</h1>\n");
  writeFileSync(join(dir, "www", "data.json"), JSON.stringify({ items: [1, 2, 3] }));
  const conf = nginxConf(dir, [
    "default_type application/octet-stream;",
    "types { text/html html; application/json json; }",
    serverBlock(p, dir),
  ], { workers, connections: 1024 });
  writeFileSync(join(dir, "nginx.conf"), conf);
  const proc = Bun.spawn(["/usr/sbin/nginx", "-p", dir, "-c", join(dir, "nginx.conf")], { stdout: "ignore", stderr: "inherit" });
  await waitForPort(p, serverBlock(p, dir).includes("[::1]") ? "::1" : "127.0.0.1");
  return wrap(proc, p, dir, undefined, true);
}

export function curl(args: string[]): { code: number; out: string } {
  const r = Bun.spawnSync(["curl", "-sS", ...args], { stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode ?? -1, out: r.stdout.toString() + r.stderr.toString() };
}
