/** Config files for integration tests, written from objects. */

export /** A minimal YAML writer (block mappings and lists; scalars as JSON, which YAML reads). */
function toYaml(v: unknown, indent = ""): string {
  if (Array.isArray(v)) {
    if (!v.length) return " []\n";
    return "\n" + v.map((item) => {
      if (item && typeof item === "object") {
        const body = toYaml(item, indent + "  ").replace(/^\n/, "");
        return `${indent}- ${body.slice(indent.length + 2)}`;
      }
      return `${indent}- ${JSON.stringify(item)}\n`;
    }).join("");
  }
  if (v && typeof v === "object") {
    const entries = Object.entries(v as Record<string, unknown>);
    if (!entries.length) return " {}\n";
    return "\n" + entries.map(([k, x]) => {
      const rest = x && typeof x === "object" ? toYaml(x, indent + "  ") : ` ${JSON.stringify(x)}\n`;
      return `${indent}${k}:${rest}`;
    }).join("");
  }
  return ` ${JSON.stringify(v)}\n`;
}
