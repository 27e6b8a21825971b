/**
 * The kernel's payload copy, both builds of it, through the compiled binary: where the kernel has
 * bpf_loop (5.17+) and the ring buffer is in use, the copying programs run as their `_lp` loop
 * variants; with the perf buffer (or an older kernel) as themselves, with bounded loops. Each
 * must deliver every byte of calls larger than one chunk: a 60,000-byte request body read by
 * Node (one read past a chunk: the buffer loop) and echoed with writev (head + body past a
 * chunk: the iovec walk).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { release, tmpdir } from "node:os";
import { join } from "node:path";
import { rootSkipReason, TracerProcess } from "../support/tracer.ts";
import { startNode } from "../support/servers.ts";
import { Cleanups, curlOk, jsonOfSize, NODE_APP, onPort } from "../support/http-kit.ts";

const SKIP = rootSkipReason();
if (SKIP) console.warn(`test/root/copy-paths.test.ts skipped: ${SKIP}`);

const c = new Cleanups();
afterEach(() => c.run());

/** bpf_loop came with 5.17. */
function kernelHasBpfLoop(): boolean {
  const [maj, min] = release().split(".").map(Number) as [number, number];
  return maj > 5 || (maj === 5 && min >= 17);
}

/** Programs the agent attached at start, from its debug log. */
function attachedPrograms(stderr: string): Set<string> {
  const out = new Set<string>();
  for (const line of stderr.split("\n")) {
    if (!line.includes('"probe attached"')) continue;
    try {
      out.add(String(JSON.parse(line).program));
    } catch {
      /* not a log line */
    }
  }
  return out;
}

describe.skipIf(!!SKIP)("payload copy: loop variants and bounded loops deliver the same bytes", () => {
  for (const buffer of ["ringbuf", "perf"] as const) {
    test(`${buffer} buffer: a 60,000-byte body each way, every byte`, async () => {
      const server = c.add(await startNode(NODE_APP), (s) => s.stop());
      const dir = c.add(mkdtempSync(join(tmpdir(), "et-copy-")), (d) => rmSync(d, { recursive: true, force: true }));
      writeFileSync(join(dir, "c.yaml"), `bpf:\n  buffer: ${buffer}\n`);
      const body = jsonOfSize(60_000);
      writeFileSync(join(dir, "body.json"), body);
      const t = c.add(await TracerProcess.capture(["-c", join(dir, "c.yaml"), "--pid", String(server.pid), "--log-level", "debug"]), (x) => x.stop());

      const progs = attachedPrograms(t.stderr);
      const variants = buffer === "ringbuf" && kernelHasBpfLoop();
      expect(progs.has("tp_exit_read_lp")).toBe(variants);
      expect(progs.has("tp_exit_read")).toBe(!variants);
      expect(progs.has("tp_exit_writev_lp")).toBe(variants);
      expect(progs.has("tp_exit_writev")).toBe(!variants);

      for (let i = 0; i < 3; i++) {
        const r = curlOk(["-H", "Content-Type: application/json", "--data-binary", `@${join(dir, "body.json")}`, `http://127.0.0.1:${server.port}/echo`]);
        expect(r.stdout).toBe(body);
      }
      const spans = await t.waitForSpans(3, onPort(server.port));
      expect(spans).toHaveLength(3);
      for (const s of spans) {
        const a = s.attributes;
        expect(a).toMatchObject({
          "http.request.method": "POST",
          "url.path": "/echo",
          "http.response.status_code": 200,
          "http.request.body.size": 60_000,
          "http.response.body.size": 60_000,
          "http.request.body": body,
          "http.response.body": body,
        });
        expect(a["ebpf.partial"]).toBeUndefined();
      }
      expect(await t.stop()).toBe(0);
    }, 60_000);
  }
});
