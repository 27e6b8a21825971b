/**
 * One cell of the kernel matrix (test/kernels): Debian bookworm's cloud kernel (6.1) booted under
 * qemu (TCG) with the compiled binary inside, default mode (tracepoints, ring buffer, the
 * kernel's own BTF), nginx serving four requests that must come out as four checked spans.
 * The kernel .deb, busybox and nginx are downloaded once into /var/cache/ebpf-tracer-test/kernels;
 * a first run takes about a minute, later ones about 20 s. The whole matrix:
 * test/kernels/matrix.sh (see test/kernels/README.md).
 */
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, test } from "bun:test";
import { BIN, ROOT } from "../support/tracer.ts";

const RUN = resolve(ROOT, "test/kernels/run.sh");
const KERNEL = "bookworm/linux-image-cloud-amd64";

function skipReason(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (caches kernels under /var/cache/ebpf-tracer-test)";
  if (!Bun.which("qemu-system-x86_64")) return "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)";
  if (!existsSync(BIN)) return "dist/ebpf-tracer is not built (bun run build)";
  for (const tool of ["dpkg-deb", "apt-get", "xz", "timeout"]) if (!Bun.which(tool)) return `${tool} is missing`;
  return undefined;
}

const SKIP = skipReason();
if (SKIP) console.warn(`test/root/kernel-matrix.test.ts skipped: ${SKIP}`);

describe.skipIf(!!SKIP)("kernel matrix: one Debian kernel under qemu", () => {
  test(
    "bookworm 6.1 (cloud), default mode: four nginx requests become four checked spans",
    async () => {
      const proc = Bun.spawn(["timeout", "--kill-after=10", "330", "bash", RUN, KERNEL, "default"], {
        cwd: ROOT,
        stdin: "ignore",
        stdout: "pipe",
        stderr: "pipe",
        env: { ...process.env, KT_TIMEOUT: "240" },
      });
      const [out, err, code] = await Promise.all([
        new Response(proc.stdout).text(),
        new Response(proc.stderr).text(),
        proc.exited,
      ]);
      const result = out.split("\n").findLast((l) => l.startsWith("RESULT ")) ?? "";
      const explain = `run.sh exited ${code}\n${result || "(no RESULT line)"}\n--- stderr (tail) ---\n${err.split("\n").slice(-40).join("\n")}`;
      if (code !== 0) console.error(explain);
      expect(result, explain).toContain("status=pass");
      expect(result).toMatch(/ kernel=6\.1\.\S+-cloud-amd64 /);
      expect(result).toContain(" spans=4 ");
      expect(result).toContain(" attach=tracepoints buffer=ringbuf btf=kernel ");
      expect(code).toBe(0);
    },
    360_000,
  );
});
