// Loads uWebSockets.js and refuses to run on its slow JavaScript fallback.
import { createRequire } from "node:module";

import { RuntimeMissing } from "../core/errors.js";

/**
 * Returns the uWebSockets.js module. Throws {@link RuntimeMissing} when the
 * native binary did not load (the package then silently falls back to a slow
 * JavaScript implementation; docs/providers.md, "In-app — uWebSockets.js").
 */
export function requireNativeUws(): typeof import("uWebSockets.js") {
  const uws = createRequire(import.meta.url)("uWebSockets.js") as typeof import("uWebSockets.js");
  if (!String(uws.App).includes("[native code]")) {
    throw new RuntimeMissing("uWebSockets.js native binary did not load (JavaScript fallback); nfx needs Node 20 on glibc >= 2.36 x64");
  }
  return uws;
}
