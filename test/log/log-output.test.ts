/** createLogSink: destinations, error routing, and real size-based rotation on files. */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogSink, type LoggingOutputConfig } from "../../src/log/output.ts";
import { Logger } from "../../src/log/log.ts";
import { validateConfig } from "../../src/config/config.ts";

const dir = mkdtempSync(join(tmpdir(), "log-output-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function cfg(over: Partial<LoggingOutputConfig> & { rotation?: Partial<LoggingOutputConfig["log_rotation"]> }): LoggingOutputConfig {
  return {
    output_paths: over.output_paths ?? [],
    error_output_paths: over.error_output_paths ?? [],
    log_rotation: { enabled: false, filename: "tracer.log", filepath: join(dir, "rot"), max_size: 1, max_backups: 2, ...over.rotation },
  };
}

const lines = (p: string) => readFileSync(p, "utf8").split("\n").filter(Boolean);

describe("destinations", () => {
  test("info goes to output_paths; error also to error_output_paths, once per destination", () => {
    const out = join(dir, "a", "out.log");
    const err = join(dir, "a", "err.log");
    const sink = createLogSink(cfg({ output_paths: [out], error_output_paths: [err, out] }));
    sink.write("one", "info");
    sink.write("two", "warn");
    sink.write("three", "error");
    sink.close();
    expect(lines(out)).toEqual(["one", "two", "three"]);
    expect(lines(err)).toEqual(["three"]);
  });

  test("appends to an existing file; the same path given twice is one destination", () => {
    const p = join(dir, "append.log");
    writeFileSync(p, "old\n");
    const sink = createLogSink(cfg({ output_paths: [p, join(dir, ".", "append.log")] }));
    sink.write("new", "info");
    sink.close();
    expect(lines(p)).toEqual(["old", "new"]);
  });

  test("stdout and stderr are accepted (written through the process streams)", () => {
    const sink = createLogSink(cfg({ output_paths: ["stdout"], error_output_paths: ["stderr"] }));
    expect(() => sink.write("log-output.test: a line on stdout", "debug")).not.toThrow();
    sink.close();
  });

  test("a log file that cannot be opened is a config error naming the key", () => {
    const blocker = join(dir, "not-a-dir");
    writeFileSync(blocker, "");
    expect(() => createLogSink(cfg({ output_paths: [join(blocker, "x.log")] }))).toThrow(/logging\.output_paths.*cannot open log file/);
    expect(() => createLogSink(cfg({ error_output_paths: [join(blocker, "x.log")] }))).toThrow(/logging\.error_output_paths/);
    expect(() => createLogSink(cfg({ rotation: { enabled: true, filepath: blocker } }))).toThrow(/logging\.log_rotation\.filepath/);
  });

  test("works as the Logger's sink with the config's defaults (stderr)", () => {
    const c = validateConfig({}, "", "").logging;
    expect(c.output_paths).toEqual(["stderr"]);
    const seen: string[] = [];
    const sink = createLogSink({ ...c, output_paths: [join(dir, "logger.log")] });
    const logger = new Logger("info", { write: (l, lv) => { seen.push(lv); sink.write(l, lv); } }, "json");
    logger.info("hello", { n: 1 });
    logger.debug("hidden");
    sink.close();
    expect(seen).toEqual(["info"]);
    expect(JSON.parse(lines(join(dir, "logger.log"))[0]!)).toMatchObject({ level: "info", msg: "hello", n: 1 });
  });
});

describe("rotation (real files, max_size in MB)", () => {
  const line = (i: number) => `${String(i).padStart(8, "0")} ${"x".repeat(1000)}`; // 1010 bytes with \n

  test("tracer.log → .1 → .2, oldest beyond max_backups deleted, no line lost within the kept files", () => {
    const filepath = join(dir, "rot1");
    const sink = createLogSink(cfg({ rotation: { enabled: true, filepath, max_size: 1, max_backups: 2 } }));
    const n = 4200; // ≈ 4.05 MiB → 4 rotations; the first file's lines are gone
    for (let i = 0; i < n; i++) sink.write(line(i), "info");
    sink.close();
    expect(readdirSync(filepath).sort()).toEqual(["tracer.log", "tracer.log.1", "tracer.log.2"]);
    for (const f of ["tracer.log", "tracer.log.1", "tracer.log.2"]) expect(statSync(join(filepath, f)).size).toBeLessThanOrEqual(1024 * 1024);
    // Read oldest to newest: consecutive numbers ending at n-1, full files of 1038 lines each.
    const all = [...lines(join(filepath, "tracer.log.2")), ...lines(join(filepath, "tracer.log.1")), ...lines(join(filepath, "tracer.log"))];
    const nums = all.map((l) => Number(l.slice(0, 8)));
    const perFile = Math.floor((1024 * 1024) / 1010);
    expect(lines(join(filepath, "tracer.log.2")).length).toBe(perFile);
    expect(lines(join(filepath, "tracer.log.1")).length).toBe(perFile);
    expect(nums[nums.length - 1]).toBe(n - 1);
    nums.forEach((v, i) => expect(v).toBe(nums[0]! + i));
    expect(nums[0]).toBe(n - (2 * perFile + lines(join(filepath, "tracer.log")).length));
  });

  test("an existing file's size counts: a restart continues it and rotates at the limit", () => {
    const filepath = join(dir, "rot2");
    mkdirSync(filepath);
    writeFileSync(join(filepath, "tracer.log"), "p".repeat(1024 * 1024 - 500) + "\n");
    const sink = createLogSink(cfg({ rotation: { enabled: true, filepath, max_size: 1, max_backups: 3 } }));
    sink.write("fits", "info"); // 5 bytes: still under 1 MiB
    sink.write("y".repeat(600), "info"); // would pass it: rotates first
    sink.close();
    expect(lines(join(filepath, "tracer.log.1")).at(-1)).toBe("fits");
    expect(lines(join(filepath, "tracer.log"))).toEqual(["y".repeat(600)]);
    expect(existsSync(join(filepath, "tracer.log.2"))).toBe(false);
  });

  test("max_backups 0 keeps only the current file", () => {
    const filepath = join(dir, "rot3");
    const sink = createLogSink(cfg({ rotation: { enabled: true, filepath, max_size: 1, max_backups: 0, filename: "t.log" } }));
    for (let i = 0; i < 1500; i++) sink.write(line(i), "info");
    sink.close();
    expect(readdirSync(filepath)).toEqual(["t.log"]);
    expect(Number(lines(join(filepath, "t.log"))[0]!.slice(0, 8))).toBe(Math.floor((1024 * 1024) / 1010));
  });

  test("the rotated file also receives errors, and output_paths still get every line", () => {
    const filepath = join(dir, "rot4");
    const plain = join(dir, "rot4-plain.log");
    const sink = createLogSink(cfg({ output_paths: [plain], error_output_paths: [join(filepath, "tracer.log")], rotation: { enabled: true, filepath } }));
    sink.write("i", "info");
    sink.write("e", "error");
    sink.close();
    expect(lines(join(filepath, "tracer.log"))).toEqual(["i", "e"]);
    expect(lines(plain)).toEqual(["i", "e"]);
  });

  test("a file removed from outside is recreated by reopen() (logrotate-style)", () => {
    const filepath = join(dir, "rot5");
    const sink = createLogSink(cfg({ rotation: { enabled: true, filepath } }));
    sink.write("before", "info");
    rmSync(join(filepath, "tracer.log"));
    sink.reopen();
    sink.write("after", "info");
    sink.close();
    expect(lines(join(filepath, "tracer.log"))).toEqual(["after"]);
  });

  test("a failed rotation keeps logging into the current file", () => {
    const filepath = join(dir, "rot6");
    mkdirSync(join(filepath, "tracer.log.2", "blocker"), { recursive: true }); // cannot be deleted: rotation fails, even as root
    const sink = createLogSink(cfg({ rotation: { enabled: true, filepath, max_size: 1, max_backups: 2 } }));
    sink.write("a".repeat(1024 * 1024 - 10), "info");
    sink.write("b".repeat(100), "info");
    sink.close();
    expect(lines(join(filepath, "tracer.log"))).toEqual(["a".repeat(1024 * 1024 - 10), "b".repeat(100)]);
    expect(existsSync(join(filepath, "tracer.log.1"))).toBe(false);
  });
});
