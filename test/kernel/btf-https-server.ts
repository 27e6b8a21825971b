/**
 * Test-only helpers for the BTF download tests: a throwaway CA and server certificate made with
 * the `openssl` CLI, a loopback HTTPS server (Bun.serve) with scripted routes and hit counts, a
 * loopback CONNECT proxy, and `.btf.tar.xz` archives built with the host's tar and xz.
 * Nothing here leaves 127.0.0.1.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import { join } from "node:path";

export type Route =
  | { body: Uint8Array }
  | { status: number }
  | { redirect: string }
  /** never answers */
  | { hang: true }
  /** sends headers and part of the body, then stalls */
  | { stall: Uint8Array };

export interface TestServer {
  port: number;
  /** https://localhost:<port> */
  origin: string;
  ca: string;
  routes: Map<string, Route>;
  hits: Map<string, number>;
  stop(): Promise<void>;
}

export interface TestProxy {
  url: string;
  connects: number;
  stop(): Promise<void>;
}

function run(cmd: string[], cwd: string): void {
  const r = Bun.spawnSync(cmd, { cwd, stderr: "pipe", stdout: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString()}`);
}

/** CA + localhost server certificate (EC P-256, 1 day) in `dir`; returns PEM texts. */
export function makeCerts(dir: string): { ca: string; cert: string; key: string } {
  mkdirSync(dir, { recursive: true });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  run(["openssl", "req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "1", "-subj", "/CN=ebpf-tracer test CA"], dir);
  run(["openssl", "req", ...ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost"], dir);
  writeFileSync(join(dir, "ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  run(["openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
    "-out", "srv.crt", "-days", "1", "-extfile", "ext.cnf"], dir);
  const read = (f: string) => readFileSync(join(dir, f), "utf8");
  return { ca: read("ca.crt"), cert: read("srv.crt"), key: read("srv.key") };
}

export function startServer(certs: { cert: string; key: string; ca: string }): TestServer {
  const routes = new Map<string, Route>();
  const hits = new Map<string, number>();
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    tls: { cert: certs.cert, key: certs.key },
    fetch(req) {
      const path = new URL(req.url).pathname;
      hits.set(path, (hits.get(path) ?? 0) + 1);
      return answer(routes.get(path));
    },
  });
  return {
    port: server.port!,
    origin: `https://localhost:${server.port}`,
    ca: certs.ca,
    routes,
    hits,
    stop: async () => { await server.stop(true); },
  };
}

function answer(r: Route | undefined): Response | Promise<Response> {
  if (!r) return new Response("not found", { status: 404 });
  if ("body" in r) return new Response(r.body);
  if ("status" in r) return new Response("nope", { status: r.status });
  if ("redirect" in r) return new Response(null, { status: 302, headers: { location: r.redirect } });
  if ("hang" in r) return new Promise<Response>(() => {});
  const part = r.stall;
  const stream = new ReadableStream<Uint8Array>({
    start(c) { c.enqueue(part); }, // and never close
  });
  return new Response(stream, { headers: { "content-length": String(part.byteLength * 4) } });
}

/** Minimal HTTP CONNECT proxy on 127.0.0.1 that counts tunnels. */
export async function startProxy(): Promise<TestProxy> {
  const sockets = new Set<net.Socket>();
  const p: TestProxy = { url: "", connects: 0, stop: async () => {} };
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on("close", () => sockets.delete(client));
    client.once("data", (buf) => {
      const m = /^CONNECT ([^\s:]+):(\d+) HTTP/.exec(buf.toString("latin1"));
      if (!m) { client.end("HTTP/1.1 405 Method Not Allowed\r\n\r\n"); return; }
      p.connects++;
      const up = net.connect(Number(m[2]), m[1] === "localhost" ? "127.0.0.1" : m[1]!, () => {
        client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        up.pipe(client);
        client.pipe(up);
      });
      sockets.add(up);
      up.on("close", () => sockets.delete(up));
      up.on("error", () => client.destroy());
      client.on("error", () => up.destroy());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  p.url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  p.stop = () => new Promise<void>((resolve) => {
    for (const s of sockets) s.destroy();
    server.close(() => resolve());
  });
  return p;
}

/** `tar cJ` of one file named `name` holding `data` (host tar + xz; tests only). */
export function buildTarXz(dir: string, name: string, data: Uint8Array): Uint8Array {
  const src = join(dir, `src-${Math.random().toString(36).slice(2)}`);
  mkdirSync(src, { recursive: true });
  writeFileSync(join(src, name), data);
  const tar = Bun.spawnSync(["tar", "-c", "-C", src, name]);
  if (tar.exitCode !== 0) throw new Error(tar.stderr.toString());
  const xz = Bun.spawnSync(["xz", "-c", "-1"], { stdin: tar.stdout });
  if (xz.exitCode !== 0) throw new Error(xz.stderr.toString());
  return new Uint8Array(xz.stdout);
}

/** Full kernel BTF to serve: this machine's when it has one, else a small fixture. */
export function sampleBtf(fixture: string): Uint8Array {
  const sys = "/sys/kernel/btf/vmlinux";
  return new Uint8Array(readFileSync(existsSync(sys) ? sys : fixture));
}

export const hostToolsPresent = ["openssl", "tar", "xz"].every((t) => Bun.which(t) !== null);
