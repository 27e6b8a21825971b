/** The `ebpf-tracer run` configuration the benchmarks use: OTLP (the defaults: protobuf + gzip)
 * over HTTPS to a loopback receiver trusted through `caCert`, selecting `pid` (and its children),
 * spooling under `spoolDir`, stats every second. */
export function runConfigYaml(o: { pid: number; caCert: string; endpoint: string; spoolDir: string; compression?: string }): string {
  return [
    `agent_config:`,
    `  ca_cert_file: ${o.caCert}`,
    `  reporting:`,
    `    endpoint: ${o.endpoint}`,
    ...(o.compression ? [`    compression: ${o.compression}`] : []),
    `capture:`,
    `  pids: [${o.pid}]`,
    `spool:`,
    `  path: ${o.spoolDir}`,
    `stats_interval: 1s`,
    `logging:`,
    `  level: info`,
  ].join("\n");
}
