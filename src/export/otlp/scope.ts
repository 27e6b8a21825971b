/** The instrumentation scope of every exported span: this agent, with its package version. */
import pkg from "../../../package.json" with { type: "json" };

export const SCOPE_NAME = "ebpf-tracer";
export const SCOPE_VERSION: string = pkg.version;
export const USER_AGENT = `${SCOPE_NAME}/${SCOPE_VERSION}`;

/** OTLP enum values (trace.proto). */
export const SPAN_KIND_SERVER = 2;
export const SPAN_KIND_CLIENT = 3;
export const STATUS_CODE_ERROR = 2;
