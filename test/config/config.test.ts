import { describe, expect, test } from "bun:test";
import { defaultConfig, keyLines, parseConfigText } from "../../src/config/config.ts";
import { TracerError } from "../../src/errors.ts";

function err(text: string, path = "/etc/x.yaml"): TracerError {
  try {
    parseConfigText(text, path);
  } catch (e) {
    return e as TracerError;
  }
  throw new Error("no error");
}

describe("config", () => {
  test("defaults", () => {
    const c = defaultConfig();
    expect(c.mode).toBe("ingress");
    expect(c.data_capture.body_max_size_bytes).toBe(131072);
    expect(c.data_capture.allowed_content_types).toEqual(["json", "x-www-form-urlencoded", "xml", "graphql", "text"]);
    expect(c.agent_config.reporting.max_batch_delay).toBe(1000);
    expect(c.spool.max_size_mb).toBe(256);
  });
  test("unknown keys name file, line and key", () => {
    const e = err("mode: ingress\ndata_capture:\n  body_max_size: 10\n");
    expect(e.code).toBe("CONFIG");
    expect(e.message).toStartWith("/etc/x.yaml:3: key \"data_capture.body_max_size\": unknown key");
  });
  test("wrong types and ranges", () => {
    expect(err("mode: both\n").message).toContain('key "mode": must be one of ingress | egress | ingress_and_egress');
    expect(err("data_capture:\n  body_max_size_bytes: -1\n").message).toContain("at least 0");
    expect(err("targets:\n  - port: 70000\n").message).toMatch(/:2: key "targets\[0\]\.port": must be at most 65535/);
    expect(err("targets:\n  - exe: a\n  - cmdline: \"(\"\n").message).toContain('"targets[1].cmdline": not a valid regular expression');
    expect(err("targets:\n  - {}\n").message).toContain("is empty");
    expect(err("exporter: kafka\n").message).toContain('key "exporter"');
    expect(err("agent_config:\n  reporting:\n    cert_file: /a.pem\n").message).toContain("key_file");
    expect(err("perfmap_queue_size: 100\n").message).toContain("power of two");
    expect(err("mode: [\n").message).toContain("not valid YAML");
  });
  test("durations", () => {
    const c = parseConfigText("shutdown_timeout: 2s\nstats_interval: 1m\nagent_config:\n  reporting:\n    max_batch_delay: 250ms\n", "x.yaml");
    expect([c.shutdown_timeout, c.stats_interval, c.agent_config.reporting.max_batch_delay]).toEqual([2000, 60000, 250]);
    expect(err("shutdown_timeout: soon\n").message).toContain("duration");
  });
  test("TOML is accepted by extension", () => {
    const c = parseConfigText('mode = "egress"\n[data_capture]\nbody_max_size_bytes = 10\n', "/etc/c.toml");
    expect(c.mode).toBe("egress");
    expect(c.data_capture.body_max_size_bytes).toBe(10);
  });
  test("key lines follow nesting and list items", () => {
    const lines = keyLines("a: 1\nb:\n  c: 2\n  d:\n    - x: 1\n      y: 2\n    - x: 3\n");
    expect(lines.get("b.c")).toBe(3);
    expect(lines.get("b.d[0].y")).toBe(6);
    expect(lines.get("b.d[1].x")).toBe(7);
  });
});
