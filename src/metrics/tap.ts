/**
 * The route/metrics stage as a SpanSink in front of the exporter: every span gets its
 * `http.route` (RouteTable), is counted in the RED metrics and the API inventory, then goes on to
 * the wrapped sink unchanged otherwise. Wrap once where the sink is made:
 *
 *   const sink = new ApiTap(createSink(cfg), cfg, { inventory: true });
 *
 * When the wrapped sink can take metrics (`exportMetrics`, the OTLP exporter), the RED snapshot is
 * pushed to it every `metrics.export_interval` and once more at shutdown. `prometheus()` gives
 * the exposition text for the admin endpoint's /metrics. Never throws from export(): a failure
 * of the stage is counted (ApiTapErrors) and the span still goes on.
 */
import type { Config } from "../config/config.ts";
import { log as defaultLog, type Logger } from "../log/log.ts";
import { RouteTable } from "../spans/routes.ts";
import type { Span, SpanSink } from "../spans/span.ts";
import { ApiInventory } from "./inventory.ts";
import { renderRedPrometheus } from "./prometheus.ts";
import { RedMetrics, type RedSnapshot } from "./red.ts";

export interface MetricsReceiver {
  exportMetrics(snap: RedSnapshot): void;
}

function takesMetrics(s: SpanSink): s is SpanSink & MetricsReceiver {
  return typeof (s as Partial<MetricsReceiver>).exportMetrics === "function";
}

export interface ApiTapOptions {
  /** keep the API inventory at metrics.inventory_path (the `run` service; not `capture`) */
  inventory?: boolean;
  logger?: Logger;
}

export class ApiTap implements SpanSink {
  readonly routes: RouteTable;
  readonly red: RedMetrics;
  readonly inventory: ApiInventory | undefined;
  private readonly enabled: boolean;
  private pushTimer: ReturnType<typeof setInterval> | undefined;
  private errors = 0;

  constructor(private inner: SpanSink, cfg: Config, opts: ApiTapOptions = {}) {
    const m = cfg.metrics;
    this.enabled = m.enabled;
    this.routes = new RouteTable({ maxRoutesPerService: m.max_routes_per_service, overrides: cfg.routes });
    this.red = new RedMetrics({ maxSeries: m.max_series });
    this.inventory = opts.inventory && m.enabled ? new ApiInventory(m.inventory_path, opts.logger ?? defaultLog) : undefined;
    this.inventory?.start();
    if (m.enabled && m.export_interval > 0) {
      this.pushTimer = setInterval(() => this.push(), m.export_interval);
      this.pushTimer.unref?.();
    }
  }

  export(span: Span): void {
    if (this.enabled) {
      try {
        const route = this.routes.annotate(span);
        this.red.record(span, route);
        this.inventory?.record(span, route);
      } catch {
        this.errors++;
      }
    }
    this.inner.export(span);
  }

  /** Sends the current metrics to the wrapped sink when it takes them. */
  push(): void {
    if (this.enabled && takesMetrics(this.inner)) this.inner.exportMetrics(this.red.snapshot());
  }

  /** Prometheus text of the RED histograms (for the admin endpoint's /metrics). */
  prometheus(): string {
    return this.enabled ? renderRedPrometheus(this.red.snapshot()) : "";
  }

  /** Replaces the wrapped sink (exporter changed on reload); returns the old one to shut down. */
  swap(next: SpanSink): SpanSink {
    const old = this.inner;
    this.inner = next;
    return old;
  }

  update(cfg: Config): void {
    const u = (this.inner as { update?: (c: Config) => void }).update;
    if (typeof u === "function") u.call(this.inner, cfg);
  }

  async shutdown(timeoutMs: number): Promise<void> {
    clearInterval(this.pushTimer);
    this.push();
    this.inventory?.stop();
    await this.inner.shutdown(timeoutMs);
  }

  stats(): Record<string, number> {
    const r = this.routes.stats();
    return {
      ...this.inner.stats(),
      TrackedRoutes: r.RoutesKnown,
      RoutesOverflow: r.RoutesOverflow,
      ...this.red.stats(),
      ...(this.inventory?.stats() ?? {}),
      ApiTapErrors: this.errors,
    };
  }
}
