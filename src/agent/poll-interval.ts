/**
 * How long the agent sleeps between drains of the kernel's event buffer.
 *
 * Why not short: every wakeup costs the host (~50 µs of CPU per wakeup on the 2-vCPU VM the
 * benchmarks run on, and it preempts the traced processes): draining every 10 ms instead of every
 * 100 ms cost a saturated Node server ~15 % of its throughput and the idle agent twice its CPU
 * (bench/README.md, "How often the agent wakes"). Why not long: the buffer must not fill between
 * two drains. So the sleep is as long as POLL_MAX_MS allows while, at the rate records arrived
 * since the last drain, the buffer would be at most FILL_SHARE full at the next one.
 *
 * Records that cannot wait (a process exec, a listen(), an executable mapping: selection and
 * uprobes depend on them) wake the agent at once through the ring buffer's forced wakeups
 * (KernelTracer.wakeupFd); without that channel (perf buffers, or no helper thread) the agent keeps
 * the short POLL_FALLBACK_MS.
 */
export const POLL_MIN_MS = 5;
export const POLL_MAX_MS = 100;
export const POLL_FALLBACK_MS = 10;
export const FILL_SHARE = 0.25;

/**
 * The next sleep in ms, given `bytes` that arrived in the last `elapsedMs` and a buffer of
 * `capacity` bytes. Pure.
 */
export function nextPollMs(bytes: number, elapsedMs: number, capacity: number): number {
  if (!(bytes > 0) || !(capacity > 0)) return POLL_MAX_MS;
  const rate = bytes / Math.max(elapsedMs, 1); // bytes per ms
  const ms = (capacity * FILL_SHARE) / rate;
  return ms >= POLL_MAX_MS ? POLL_MAX_MS : ms <= POLL_MIN_MS ? POLL_MIN_MS : Math.floor(ms);
}
