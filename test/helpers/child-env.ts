// Processes the tests start (roles, the CLI) run without tap's process-info hook: coverage is off, and the hook doubles each child's start-up CPU.
/**
 * tap loads `@tapjs/processinfo` into every test process and, through
 * `process-on-spawn`, into every process it spawns (NODE_OPTIONS), to map
 * coverage onto children. This suite disables coverage, and the hook costs
 * each child about 0.7 s of CPU (`nfx --help`: 1.37 s with it, 0.66 s
 * without) — hundreds of role processes and CLI runs per `npm test`.
 * Importing this module removes process-on-spawn's listeners (its documented
 * global singleton) and that one option from NODE_OPTIONS; other
 * NODE_OPTIONS stay. Outside tap it does nothing.
 */
const spawnHooks = (globalThis as Record<symbol, { listeners?: unknown[] } | undefined>)[Symbol.for("process-on-spawn@*:singletonId")];
spawnHooks?.listeners?.splice(0);
const opts = process.env.NODE_OPTIONS;
if (opts?.includes("@tapjs/processinfo")) {
  const kept = opts
    .split(/\s+/)
    .filter((o) => o && !o.includes("@tapjs/processinfo"))
    .join(" ");
  if (kept) process.env.NODE_OPTIONS = kept;
  else delete process.env.NODE_OPTIONS;
}
