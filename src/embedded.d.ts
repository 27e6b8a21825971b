// Files imported `with { type: "file" }` resolve to a path (inside the compiled binary's $bunfs).
declare module "*.o" {
  const path: string;
  export default path;
}
declare module "*.so" {
  const path: string;
  export default path;
}
declare module "*.btf" {
  const path: string;
  export default path;
}
