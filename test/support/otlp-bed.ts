/**
 * The shared setup of the OTLP exporter tests: test certificates, one HTTPS receiver, private
 * temp dirs removed at the end, and a logger that keeps its lines for assertions.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Logger } from "../../src/log/log.ts";
import { makeTestCerts, removeTestCerts, type TestCerts } from "./certs.ts";
import { OtlpReceiver } from "./otlp-receiver.ts";

export class OtlpBed {
  private readonly dirs: string[] = [];
  private constructor(readonly certs: TestCerts, readonly rx: OtlpReceiver) {}

  static async start(): Promise<OtlpBed> {
    const certs = makeTestCerts();
    return new OtlpBed(certs, await OtlpReceiver.start({ tls: { cert: certs.server.cert, key: certs.server.key } }));
  }

  tempDir(prefix = "otlp-spool-"): string {
    const d = mkdtempSync(join(tmpdir(), prefix));
    this.dirs.push(d);
    return d;
  }

  async close(): Promise<void> {
    await this.rx.close();
    removeTestCerts(this.certs);
    for (const d of this.dirs) rmSync(d, { recursive: true, force: true });
  }
}

export interface CapturedLog {
  logger: Logger;
  lines: Record<string, any>[];
  find: (re: RegExp) => Record<string, any>[];
}

/** A debug-level logger whose JSON lines are kept, parsed, in `lines`. */
export function captureLog(): CapturedLog {
  const lines: Record<string, any>[] = [];
  const logger = new Logger("debug", { write: (line) => lines.push(JSON.parse(line)) });
  return { logger, lines, find: (re) => lines.filter((l) => re.test(l.msg)) };
}
