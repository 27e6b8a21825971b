/**
 * The agent's one error type. Setup code throws it; the hot path counts instead of throwing.
 * Only `main` maps a code to a process exit status (see EXIT_STATUS).
 */
export type ErrorCode =
  | "CONFIG"          // bad config file or flag: names file, key, line and reason
  | "PRIVILEGE"       // not root / missing capability
  | "UNSUPPORTED"     // the kernel cannot support capture (no BTF, no BPF...)
  | "DEPENDENCY"      // a host library the binary needs is missing
  | "BPF"             // libbpf load/attach failure
  | "IO"              // file or network failure during setup
  | "INTERNAL";

export class TracerError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly detail?: Record<string, unknown>,
  ) {
    super(message);
    this.name = "TracerError";
  }
}

/**
 * Exit statuses. 77 (EX_NOPERM) for missing privileges; 78 (EX_CONFIG) for configuration;
 * 69 (EX_UNAVAILABLE) means "this kernel cannot support capture" and is listed in the systemd
 * unit's RestartPreventExitStatus so an unsupported host does not crash-loop.
 */
export const EXIT_STATUS: Record<ErrorCode, number> = {
  CONFIG: 78,
  PRIVILEGE: 77,
  UNSUPPORTED: 69,
  DEPENDENCY: 69,
  BPF: 1,
  IO: 1,
  INTERNAL: 70,
};

export function isTracerError(e: unknown): e is TracerError {
  return e instanceof TracerError;
}
