/**
 * Counters of the OTLP exporter, returned by stats() (also listed in docs/exporter.md).
 * Counters only grow; gauges (marked) are the current value.
 */
export interface OtlpCounters {
  /** spans the collector accepted (2xx, minus partial-success rejections); name kept from the reference tracer */
  TotalRequestsSent: number;
  /** HTTP requests answered 2xx */
  ExportRequestsOk: number;
  /** spans written to the on-disk spool (each time a batch is spooled) */
  SpansSpooled: number;
  /** spans lost: spool bound exceeded, non-retryable HTTP answer, spool disabled or unwritable, export after shutdown */
  SpansDropped: number;
  /** spans the collector refused in a partial success */
  SpansRejected: number;
  /** spool files skipped because torn or corrupt */
  SpoolFilesCorrupt: number;
  /** failed attempts: connection errors and timeouts */
  ExportErrorsNetwork: number;
  /** failed attempts: certificate or handshake errors */
  ExportErrorsTls: number;
  /** answers 4xx (429 included; retried) and other 4xx (batch dropped) */
  ExportErrorsHttp4xx: number;
  /** answers 5xx (502/503/504 retried, others dropped) */
  ExportErrorsHttp5xx: number;
  /** attempts scheduled again after a retryable failure */
  ExportRetries: number;
  /** zstd-compressed batches the collector refused (HTTP 400/415) and that were sent again as gzip */
  ZstdRefused: number;
  /** duration of the last completed request, ms */
  LastExportLatencyMs: number;
}

export function newCounters(): OtlpCounters {
  return {
    TotalRequestsSent: 0, ExportRequestsOk: 0, SpansSpooled: 0, SpansDropped: 0, SpansRejected: 0, SpoolFilesCorrupt: 0,
    ExportErrorsNetwork: 0, ExportErrorsTls: 0, ExportErrorsHttp4xx: 0, ExportErrorsHttp5xx: 0, ExportRetries: 0, ZstdRefused: 0,
    LastExportLatencyMs: 0,
  };
}
