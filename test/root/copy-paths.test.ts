/**
 * The kernel's payload copy, both builds of it, through the compiled binary: where the kernel has
 * bpf_loop (5.17+) and the ring buffer is in use, the copying programs run as their `_lp` loop
 * variants; with the perf buffer (or an older kernel) as themselves, with bounded loops. Each
 * must deliver every byte of calls larger than one chunk: a 60,000-byte request body read by
 * Node (one read past a chunk: the buffer loop) and echoed with writev (head + body past a
 * chunk: the iovec walk). A third run pushes ~5 MB through a 1 MiB ring, so records wrap at the end
 * of its data area (which the agent maps once and joins itself) and must still arrive whole.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { release, tmpdir } from "node:os";
import { join } from "node:path";
import { rootSkipReason, TracerProcess } from "../support/tracer.ts";
import { startNode } from "../support/servers.ts";
import { Cleanups, exitStats, jsonOfSize, NODE_APP, onPort } from "../support/http-kit.ts";

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
  const cases = [
    { buffer: "ringbuf", ringMb: 0, exchanges: 3 },
    { buffer: "perf", ringMb: 0, exchanges: 3 },
    { buffer: "ringbuf", ringMb: 1, exchanges: 40 },
  ] as const;
  for (const { buffer, ringMb, exchanges } of cases) {
    const title = ringMb ? `${buffer} buffer of ${ringMb} MiB: ${exchanges} bodies of 60,000 bytes each way wrap the ring, every byte` : `${buffer} buffer: a 60,000-byte body each way, every byte`;
    test(title, async () => {
      const server = c.add(await startNode(NODE_APP), (s) => s.stop());
      const dir = c.add(mkdtempSync(join(tmpdir(), "et-copy-")), (d) => rmSync(d, { recursive: true, force: true }));
      writeFileSync(join(dir, "c.yaml"), `bpf:\n  buffer: ${buffer}\n${ringMb ? `  ringbuf_size_mb: ${ringMb}\n` : ""}`);
      const body = jsonOfSize(60_000);
      writeFileSync(join(dir, "body.json"), body);
      const t = c.add(await TracerProcess.capture(["-c", join(dir, "c.yaml"), "--pid", String(server.pid), "--log-level", "debug"]), (x) => x.stop());

      const progs = attachedPrograms(t.stderr);
      const variants = buffer === "ringbuf" && kernelHasBpfLoop();
      expect(progs.has("tp_exit_read_lp")).toBe(variants);
      expect(progs.has("tp_exit_read")).toBe(!variants);
      expect(progs.has("tp_exit_writev_lp")).toBe(variants);
      expect(progs.has("tp_exit_writev")).toBe(!variants);

      // curl asynchronously: a synchronous spawn would stop this process reading the agent's
      // stdout, and an agent blocked on a full pipe stops draining the ring.
      for (let i = 0; i < exchanges; i++) {
        const curl = Bun.spawn(["curl", "-sS", "-H", "Content-Type: application/json", "--data-binary", `@${join(dir, "body.json")}`, `http://127.0.0.1:${server.port}/echo`], { stdout: "pipe", stderr: "inherit" });
        expect(await new Response(curl.stdout).text()).toBe(body);
        expect(await curl.exited).toBe(0);
      }
      const spans = await t.waitForSpans(exchanges, onPort(server.port));
      expect(spans).toHaveLength(exchanges);
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
      expect(exitStats(t.stderr)).toMatchObject({ EventLost: 0, RingCorruptRecords: 0 });
    }, 60_000);
  }
});
