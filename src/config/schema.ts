/**
 * Every config key the agent accepts, with its type and default. Unknown keys are errors.
 * Names follow the Traceable eBPF tracer where it has one. Durations accept "500ms", "5s", "1m"
 * or a number of seconds.
 */
export type Mode = "ingress" | "egress" | "ingress_and_egress";
export const MODES: readonly Mode[] = ["ingress", "egress", "ingress_and_egress"];

export type FieldSpec =
  | { t: "string"; def?: string }
  | { t: "int"; def?: number; min?: number; max?: number }
  | { t: "number"; def?: number; min?: number; max?: number }
  | { t: "bool"; def?: boolean }
  | { t: "duration"; def?: number; min?: number } // stored in milliseconds
  | { t: "enum"; values: readonly string[]; def?: string }
  | { t: "string[]"; def?: string[] }
  | { t: "int[]"; def?: number[] }
  | { t: "map" } // string → string
  | { t: "object"; fields: Record<string, FieldSpec> }
  | { t: "list"; item: Record<string, FieldSpec> };

const logRotation: Record<string, FieldSpec> = {
  enabled: { t: "bool", def: false },
  filename: { t: "string", def: "tracer.log" },
  filepath: { t: "string", def: "/var/log/ebpf-tracer" },
  max_size: { t: "int", def: 100, min: 1 },
  max_backups: { t: "int", def: 5, min: 0 },
};

/**
 * Redaction defaults (src/spans/redact.ts, docs/spans.md "Redaction"). Header names are matched
 * case-insensitively; field names case-insensitively with "-", "_" and "." ignored (api_key =
 * apiKey = api-key); both accept "*" as a wildcard.
 */
export const DEFAULT_REDACT_HEADERS = [
  "authorization", "proxy-authorization", "cookie", "set-cookie",
  "x-api-key", "api-key", "apikey", "x-auth-token", "x-access-token", "x-refresh-token",
  "x-csrf-token", "x-xsrf-token", "x-amz-security-token", "x-goog-api-key", "private-token",
  "x-vault-token", "*-secret", "*-password",
];
export const DEFAULT_REDACT_FIELDS = [
  "*password*", "passwd", "pwd", "*secret*", "*token", "*apikey", "*accesskey", "*privatekey",
  "credential*", "auth", "authorization", "session", "sessionid", "sid", "*signature",
  "cvv", "cvc", "*cardnumber", "ccnumber", "pan", "ssn", "otp",
];
/** Built-in value patterns (src/spans/redact.ts BUILTIN_PATTERNS). */
export const REDACT_PATTERN_NAMES = ["jwt", "card_number", "aws_access_key", "url_credentials", "private_key"] as const;
export const DEFAULT_REDACT_KEY_FILE = "/var/lib/ebpf-tracer/redact.key";

const redactFields: Record<string, FieldSpec> = {
  mode: { t: "enum", values: ["mask", "hash"], def: "mask" },
  headers: { t: "string[]", def: DEFAULT_REDACT_HEADERS },
  fields: { t: "string[]", def: DEFAULT_REDACT_FIELDS },
  // card_number is opt-in: order ids and other 13-19 digit numbers pass Luhn one time in ten,
  // and card fields are caught by name (cardnumber, ccnumber, cvv) anyway
  value_patterns: { t: "string[]", def: REDACT_PATTERN_NAMES.filter((n) => n !== "card_number") },
  custom_patterns: { t: "string[]", def: [] },
  key_file: { t: "string", def: DEFAULT_REDACT_KEY_FILE },
};

export const SCHEMA: Record<string, FieldSpec> = {
  mode: { t: "enum", values: MODES, def: "ingress" },
  service_name: { t: "string", def: "" },
  environment: { t: "string", def: "" },
  exporter: { t: "string", def: "otlp" }, // otlp | stdout | file:PATH
  capture: {
    t: "object",
    fields: {
      pids: { t: "int[]", def: [] },
      exe: { t: "string[]", def: [] },
      ports: { t: "int[]", def: [] },
    },
  },
  capture_all: { t: "bool", def: false },
  targets: {
    t: "list",
    item: {
      service_name: { t: "string" },
      exe: { t: "string" },
      cmdline: { t: "string" },
      mode: { t: "enum", values: MODES },
      systemd_unit: { t: "string" },
      cgroup: { t: "string" },
      container: { t: "string" },
      port: { t: "int", min: 1, max: 65535 },
      pid: { t: "int", min: 1 },
      /** rate limit for this target's processes, enforced by shedding whole connections */
      max_spans_per_second: { t: "int", min: 1 },
    },
  },
  /** HTTP/2 and gRPC capture (Traceable: ebpfHttp2CaptureEnabled); false leaves HTTP/1 alone. */
  http2_data_capture_enabled: { t: "bool", def: true },
  http2: {
    t: "object",
    fields: {
      /** a stream still open this long after its request is emitted flagged incomplete */
      stream_max_age: { t: "duration", def: 300_000, min: 1000 },
      /** open streams per connection; the least recently active is evicted (flagged) past it */
      max_streams_per_connection: { t: "int", def: 256, min: 1, max: 65536 },
    },
  },
  /** The agent's own overhead budget (0 = none): over it, connections are shed in the kernel. */
  budget: {
    t: "object",
    fields: {
      cpu_percent: { t: "number", def: 0, min: 0, max: 10_000 },
      memory_mb: { t: "int", def: 0, min: 0 },
    },
  },
  exclude_processes: { t: "string[]", def: [] },
  custom_span_attributes: { t: "map" },
  proc_fs_scan_period_in_sec: { t: "int", def: 0, min: 0 },
  data_capture: {
    t: "object",
    fields: {
      body_max_size_bytes: { t: "int", def: 131072, min: 0, max: 16 * 1024 * 1024 },
      allowed_content_types: {
        t: "string[]",
        def: ["json", "x-www-form-urlencoded", "xml", "graphql", "text"],
      },
      redact: { t: "object", fields: redactFields },
    },
  },
  bpf: {
    t: "object",
    fields: {
      /** 8 MiB holds ~250 ms of a saturating keep-alive load (~30 MB/s of records): many times a
       * full collection's pause; its pages are resident once data has cycled through them */
      ringbuf_size_mb: { t: "int", def: 8, min: 1, max: 1024 },
      /** auto: BPF ring buffer when the kernel has it (5.8+), else a perf event array */
      buffer: { t: "enum", values: ["auto", "ringbuf", "perf"], def: "auto" },
      /** where the kernel keeps a thread's TLS call state: auto = task local storage when the
       * kernel has it (5.11+ with its own BTF), else a hash by thread id (docs/tls.md §3) */
      thread_state: { t: "enum", values: ["auto", "task_storage", "hash"], def: "auto" },
      max_capture_bytes_per_call: { t: "int", def: 144 * 1024, min: 64, max: 1024 * 1024 },
    },
  },
  enable_tracepoints: { t: "bool", def: true },
  /** TLS plaintext through uprobes on TLS libraries (docs/tls.md); false: TLS connections are reported, not decrypted */
  enable_uprobes: { t: "bool", def: true },
  /** file-name prefixes of shared libraries analysed for TLS stacks (e.g. libssl.so); empty: every mapped library */
  libssl_prefixes: { t: "string[]", def: [] },
  /** processes whose TLS is not probed: exact executable path and/or command-line substring */
  uprobe_attach_exclusion_rules: { t: "list", item: { exe: { t: "string" }, cmdline: { t: "string" } } },
  /** stripped static TLS libraries: virtual addresses (as nm prints them) of SSL_read/SSL_write/SSL_free per binary */
  custom_ssl_address: { t: "list", item: { binary: { t: "string" }, ssl_read: { t: "int", min: 1 }, ssl_write: { t: "int", min: 1 }, ssl_free: { t: "int", min: 1 } } },
  max_active_ret_probe: { t: "int", def: 0, min: 0 }, // 0 = 10 x CPUs
  perfmap_queue_size: { t: "int", def: 1024, min: 1 },
  btf: {
    t: "object",
    fields: {
      path: { t: "string", def: "" },
      download_url: {
        t: "string",
        def: "https://github.com/aquasecurity/btfhub-archive/raw/main/{id}/{version_id}/{arch}/{release}.btf.tar.xz",
      },
      download_storage_path: { t: "string", def: "/var/lib/ebpf-tracer/btf" },
      download_timeout: { t: "duration", def: 30_000, min: 1 },
    },
  },
  agent_config: {
    t: "object",
    fields: {
      secure: { t: "bool", def: true },
      ca_cert_file: { t: "string", def: "" },
      reporting: {
        t: "object",
        fields: {
          endpoint: { t: "string", def: "" },
          cert_file: { t: "string", def: "" },
          key_file: { t: "string", def: "" },
          agent_token: { t: "string", def: "" },
          headers: { t: "map" },
          encoding: { t: "enum", values: ["protobuf", "json"], def: "protobuf" },
          compression: { t: "enum", values: ["gzip", "zstd", "none"], def: "gzip" },
          max_batch_spans: { t: "int", def: 512, min: 1 },
          max_batch_delay: { t: "duration", def: 1000 },
          max_in_flight: { t: "int", def: 4, min: 1 },
          max_queue_spans: { t: "int", def: 8192, min: 1 },
          request_timeout: { t: "duration", def: 10_000 },
        },
      },
    },
  },
  spool: {
    t: "object",
    fields: {
      path: { t: "string", def: "/var/lib/ebpf-tracer/spool" },
      max_size_mb: { t: "int", def: 256, min: 0 },
    },
  },
  shutdown_timeout: { t: "duration", def: 5000 },
  stats_interval: { t: "duration", def: 60_000 },
  logging: {
    t: "object",
    fields: {
      level: { t: "enum", values: ["trace", "debug", "info", "warn", "error"], def: "info" },
      encoding: { t: "enum", values: ["json", "console"], def: "json" },
      output_paths: { t: "string[]", def: ["stderr"] },
      error_output_paths: { t: "string[]", def: ["stderr"] },
      log_rotation: { t: "object", fields: logRotation },
    },
  },
  /** route templates: patterns tried before the heuristics (src/spans/routes.ts) */
  routes: { t: "list", item: { service: { t: "string" }, patterns: { t: "string[]" } } },
  /** RED metrics per route (src/metrics/red.ts) and the API inventory (src/metrics/inventory.ts) */
  metrics: {
    t: "object",
    fields: {
      enabled: { t: "bool", def: true },
      export_interval: { t: "duration", def: 60_000 }, // OTLP metrics push period; 0 = not pushed
      max_series: { t: "int", def: 10_000, min: 1 },
      max_routes_per_service: { t: "int", def: 1000, min: 1 },
      inventory_path: { t: "string", def: "/var/lib/ebpf-tracer/apis.json" }, // "" = not kept
    },
  },
  admin: {
    t: "object",
    fields: {
      enabled: { t: "bool", def: true },
      address: { t: "string", def: "127.0.0.1:9464" },
      /** a non-loopback admin.address is refused unless this is true and bearer_token is set */
      allow_remote: { t: "bool", def: false },
      bearer_token: { t: "string", def: "" },
    },
  },
};
