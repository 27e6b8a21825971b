/**
 * Route templates (`http.route`) from raw request paths, per service, with bounded cardinality.
 *
 * A path is split on "/" and each segment is classified on its own: numbers → {id}, UUIDs →
 * {uuid}, dates (2024-05-01, with an optional time) → {date}, e-mail addresses → {email}, long
 * hex strings or base64/base64url-like strings with digits (and JWT-shaped ones) → {token}.
 * What is left is literal, but learned online: when one position of the route tree (same
 * prefix template) has seen `learnThreshold` distinct literal values, it becomes {param} and
 * the routes already learned under it are merged into one. gRPC paths (`/pkg.Service/Method`)
 * are kept as they are.
 *
 * Overrides (config `routes:`) are tried first, in order: a pattern is a path whose segments are
 * literals, `{name}` (any one segment) or a final `*` (any rest); the route is the pattern text.
 *
 * Bounds: at most `maxRoutesPerService` routes per service; a new route past that is answered
 * with CATCH_ALL and counted (RoutesOverflow). At most MAX_SERVICES services get their own
 * table; the rest share one. Paths deeper than MAX_DEPTH segments end in `/*`. The tree holds only
 * nodes on the way to a route, so its size is bounded by routes × depth.
 *
 * Pure apart from its own state: no I/O, no clock. Never throws on input.
 */
import { routePatternProblem } from "../config/config.ts";
import type { Span } from "./span.ts";

export const CATCH_ALL = "/{other}";
export const LEARNED = "{param}";
const MAX_SERVICES = 256;
const MAX_DEPTH = 32;

export interface RouteOverride {
  /** absent or "": every service */
  service?: string;
  patterns: string[];
}

export interface RouteOptions {
  maxRoutesPerService?: number;
  /** distinct literal values at one position before it becomes {param} */
  learnThreshold?: number;
  overrides?: RouteOverride[];
}

interface Node {
  children: Map<string, Node>;
  /** literal (not placeholder) children */
  literals: number;
  /** literals here are {param} from now on */
  collapsed: boolean;
  /** the template of the path ending here; set when this node is a route */
  route: string | undefined;
  /** the template of the path to this node (without the trailing route marker) */
  readonly prefix: string;
}

function newNode(prefix: string): Node {
  return { children: new Map(), literals: 0, collapsed: false, route: undefined, prefix };
}

function isPlaceholder(key: string): boolean {
  return key.charCodeAt(0) === 123 /* { */ && key.charCodeAt(key.length - 1) === 125 /* } */;
}

const UUID_DASHES = [8, 13, 18, 23];
const DATE_RE = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/;
const EMAIL_RE = /^[^@\s]+(?:@|%40)[^@\s]+\.[A-Za-z]{2,}$/;
const JWT_RE = /^[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*$/;

/**
 * The placeholder for one path segment, or undefined when it is literal. One pass over the
 * characters decides most cases; the regular expressions run only on candidates.
 */
export function placeholderOf(seg: string): string | undefined {
  return placeholderIn(seg, 0, seg.length);
}

/** placeholderOf for `s.slice(from, to)`, without making the substring unless a pattern must be tested. */
function placeholderIn(s: string, from: number, to: number): string | undefined {
  const len = to - from;
  if (len === 0) return undefined;
  let digits = 0;
  let hexLetters = 0;
  let upper = 0;
  let lower = 0;
  let dashes = 0;
  let b64 = 0; // _ + =
  let dots = 0;
  let other = 0;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) digits++;
    else if (c >= 97 && c <= 122) {
      lower++;
      if (c <= 102) hexLetters++;
    } else if (c >= 65 && c <= 90) {
      upper++;
      if (c <= 70) hexLetters++;
    } else if (c === 45) dashes++;
    else if (c === 95 || c === 43 || c === 61) b64++;
    else if (c === 46) dots++;
    else other++;
  }
  if (digits === len) return "{id}";
  if (len === 36 && dashes === 4 && digits + hexLetters === 32 && UUID_DASHES.every((i) => s.charCodeAt(from + i) === 45)) return "{uuid}";
  if (digits >= 8 && len >= 10 && s.charCodeAt(from + 4) === 45 && DATE_RE.test(s.slice(from, to))) return "{date}";
  if (other > 0) {
    const seg = s.slice(from, to);
    return (seg.includes("@") || seg.includes("%40")) && EMAIL_RE.test(seg) ? "{email}" : undefined;
  }
  if (len >= 16 && digits + hexLetters === len) return "{token}";
  if (len >= 20 && digits > 0 && upper + lower > 0) {
    if (dots === 0 && ((upper > 0 && lower > 0) || digits * 5 >= len)) return "{token}";
    if (dots === 2 && JWT_RE.test(s.slice(from, to))) return "{token}";
  }
  return undefined;
}

interface Pattern {
  /** literal segment, or null for {name} */
  segs: (string | null)[];
  rest: boolean;
  route: string;
}

function compilePattern(p: string): Pattern {
  const parts = p.split("/").slice(1);
  const rest = parts[parts.length - 1] === "*";
  if (rest) parts.pop();
  return { segs: parts.map((s) => (isPlaceholder(s) ? null : s)), rest, route: p };
}

function matchPattern(p: Pattern, segs: string[]): boolean {
  // segs[0] is the empty string before the leading "/"
  const n = segs.length - 1;
  if (p.rest ? n < p.segs.length : n !== p.segs.length) return false;
  for (let i = 0; i < p.segs.length; i++) {
    const want = p.segs[i];
    if (want !== null && want !== segs[i + 1]) return false;
  }
  return true;
}

class ServiceRoutes {
  readonly root = newNode("");
  routes = 0;
  readonly rpc = new Set<string>();
}

export interface RouteStats {
  RoutesKnown: number;
  RoutesOverflow: number;
  RoutesLearnedCollapses: number;
}

export class RouteTable {
  private readonly services = new Map<string, ServiceRoutes>();
  private readonly shared = new ServiceRoutes();
  private readonly maxRoutes: number;
  private readonly threshold: number;
  private readonly global: Pattern[] = [];
  private readonly perService = new Map<string, Pattern[]>();
  private hasOverrides = false;
  private lastService: string | undefined;
  private lastTable: ServiceRoutes | undefined;
  private overflow = 0;
  private collapses = 0;

  /** Patterns must have passed routePatternProblem (config validation); bad ones are skipped. */
  constructor(opts: RouteOptions = {}) {
    this.maxRoutes = Math.max(1, opts.maxRoutesPerService ?? 1000);
    this.threshold = Math.max(2, opts.learnThreshold ?? 50);
    for (const o of opts.overrides ?? []) {
      const list = o.service ? this.perService.get(o.service) ?? [] : this.global;
      for (const p of o.patterns) if (!routePatternProblem(p)) list.push(compilePattern(p));
      if (o.service) this.perService.set(o.service, list);
    }
    this.hasOverrides = this.global.length > 0 || this.perService.size > 0;
  }

  /**
   * The route of a span: gRPC spans (rpc.system set) keep their path (or /service/method); HTTP
   * spans get a template of url.path. undefined when the span has no path.
   */
  routeOf(span: Span): string | undefined {
    const a = span.attributes;
    const service = span.resource["service.name"];
    const svc = typeof service === "string" ? service : "";
    if (a["rpc.system"] !== undefined) {
      const path = a["url.path"];
      const route = typeof path === "string" && path.startsWith("/") ? path : `/${String(a["rpc.service"] ?? "")}/${String(a["rpc.method"] ?? "")}`;
      return this.rpcRoute(svc, route);
    }
    const path = a["url.path"];
    return typeof path === "string" ? this.route(svc, path) : undefined;
  }

  /** Sets `http.route` on HTTP spans (not on gRPC ones, whose route is rpc.service/rpc.method) and returns the route. */
  annotate(span: Span): string | undefined {
    const a = span.attributes;
    if (a["rpc.system"] !== undefined) return this.routeOf(span);
    const path = a["url.path"];
    if (typeof path !== "string") return undefined;
    const service = span.resource["service.name"];
    const route = this.route(typeof service === "string" ? service : "", path);
    a["http.route"] = route;
    return route;
  }

  private table(service: string): ServiceRoutes {
    if (service === this.lastService) return this.lastTable!;
    let t = this.services.get(service);
    if (t) {
      this.lastService = service;
      this.lastTable = t;
    }
    if (t) return t;
    if (this.services.size >= MAX_SERVICES) return this.shared;
    t = new ServiceRoutes();
    this.services.set(service, t);
    return t;
  }

  private rpcRoute(service: string, route: string): string {
    const t = this.table(service);
    if (t.rpc.has(route)) return route;
    if (t.routes >= this.maxRoutes) {
      this.overflow++;
      return CATCH_ALL;
    }
    t.rpc.add(route);
    t.routes++;
    return route;
  }

  /**
   * The template of `path` for `service`, learning from it. The common case (a known route) walks
   * the tree without splitting the path or building keys: a segment that is a literal child of
   * its node needs no classification, because only literal segments are stored as literal keys.
   */
  route(service: string, path: string): string {
    if (path === "" || path.charCodeAt(0) !== 47 /* / */) return path === "*" ? "*" : CATCH_ALL;
    if (this.hasOverrides) {
      const segs = path.split("/");
      const own = this.perService.get(service);
      if (own) for (const p of own) if (matchPattern(p, segs)) return p.route;
      for (const p of this.global) if (matchPattern(p, segs)) return p.route;
    }
    const t = this.table(service);
    let node = t.root;
    let start = 1;
    const len = path.length;
    for (let depth = 1; ; depth++) {
      if (depth > MAX_DEPTH) return this.learn(t, path);
      let end = path.indexOf("/", start);
      if (end < 0) end = len;
      // A segment starting with a digit is usually an id: classify it in place (no substring);
      // others are tried as a literal child first.
      const c0 = path.charCodeAt(start);
      let child: Node | undefined;
      if (c0 >= 48 && c0 <= 57) {
        const ph = placeholderIn(path, start, end);
        child = ph !== undefined ? node.children.get(ph) : node.children.get(node.collapsed ? LEARNED : path.slice(start, end));
      } else {
        const seg = path.slice(start, end);
        child = node.collapsed ? undefined : node.children.get(seg);
        if (child === undefined) child = node.children.get(placeholderIn(path, start, end) ?? (node.collapsed ? LEARNED : seg));
      }
      if (child === undefined) return this.learn(t, path);
      node = child;
      if (end >= len) break;
      start = end + 1;
    }
    return node.route ?? this.learn(t, path);
  }

  /** The slow path: a route not in the tree yet (or a very deep path). */
  private learn(t: ServiceRoutes, path: string): string {
    const segs = path.split("/");
    const deep = segs.length - 1 > MAX_DEPTH;
    const n = deep ? MAX_DEPTH + 1 : segs.length;
    const keys = new Array<string>(deep ? n : n - 1);
    // Read-only walk first: a known route costs no allocation in the tree.
    let node: Node | undefined = t.root;
    for (let i = 1; i < n; i++) {
      const seg = segs[i]!;
      let key = placeholderOf(seg) ?? seg;
      if (node && node.collapsed && !isPlaceholder(key)) key = LEARNED;
      keys[i - 1] = key;
      node = node?.children.get(key);
    }
    if (deep) keys[n - 1] = "*";
    if (deep && node) node = node.children.get("*");
    if (node?.route !== undefined) return node.route;
    if (t.routes >= this.maxRoutes) {
      this.overflow++;
      return CATCH_ALL;
    }
    return this.insert(t, keys);
  }

  private insert(t: ServiceRoutes, keys: string[]): string {
    let node = t.root;
    for (let i = 0; i < keys.length; i++) {
      let key = keys[i]!;
      if (node.collapsed && !isPlaceholder(key)) key = LEARNED;
      let child = node.children.get(key);
      if (!child) {
        const literal = !isPlaceholder(key) && key !== "*";
        if (literal && node.literals + 1 >= this.threshold) {
          this.collapse(t, node);
          key = LEARNED;
          child = node.children.get(key);
        }
        if (!child) {
          child = newNode(`${node.prefix}/${key}`);
          node.children.set(key, child);
          if (literal) node.literals++;
        }
      }
      node = child;
    }
    if (node.route === undefined) {
      node.route = node.prefix === "" ? "/" : node.prefix;
      t.routes++;
    }
    return node.route;
  }

  /** Turns the literal children of `node` into one {param} child, merging their subtrees. */
  private collapse(t: ServiceRoutes, node: Node): void {
    this.collapses++;
    node.collapsed = true;
    let target = node.children.get(LEARNED);
    if (!target) {
      target = newNode(`${node.prefix}/${LEARNED}`);
      node.children.set(LEARNED, target);
    }
    for (const [key, child] of [...node.children]) {
      if (isPlaceholder(key) || key === "*") continue;
      node.children.delete(key);
      this.merge(t, target, child);
    }
    node.literals = 0;
  }

  /** Moves everything under `src` into `dst` (same position, new prefix). */
  private merge(t: ServiceRoutes, dst: Node, src: Node): void {
    if (src.route !== undefined) {
      if (dst.route === undefined) dst.route = dst.prefix;
      else t.routes--;
    }
    for (const [key, child] of src.children) {
      const k = dst.collapsed && !isPlaceholder(key) && key !== "*" ? LEARNED : key;
      let d = dst.children.get(k);
      if (!d) {
        d = newNode(`${dst.prefix}/${k}`);
        dst.children.set(k, d);
        if (!isPlaceholder(k) && k !== "*") dst.literals++;
      }
      this.merge(t, d, child);
    }
  }

  stats(): RouteStats {
    let known = this.shared.routes;
    for (const t of this.services.values()) known += t.routes;
    return { RoutesKnown: known, RoutesOverflow: this.overflow, RoutesLearnedCollapses: this.collapses };
  }
}
