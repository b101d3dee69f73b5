// How zod problems read, for requests and configuration alike: plain-language type errors and `field: rule` lines.
import { z } from "zod";

// Plain-language messages for type errors everywhere (requests and config).
z.config({
  customError: (iss) => {
    if (iss.code === "invalid_type") {
      if (iss.input === undefined) return "is required";
      const a = iss.expected === "array" || iss.expected === "object" ? "an" : "a";
      return `must be ${a} ${iss.expected}`;
    }
    return undefined;
  },
});

/** `field: rule` of one zod issue; unknown keys name the full path of the key. */
export function formatIssue(issue: z.core.$ZodIssue): { field: string; message: string } {
  const at = issue.path.map(String).join(".");
  if (issue.code === "unrecognized_keys") {
    const f = `${at ? at + "." : ""}${issue.keys[0]}`;
    return { field: f, message: `${f}: unknown field` };
  }
  const f = at || "(body)";
  // A bad record key: the key's own rule is inside.
  const inner = issue.code === "invalid_key" ? issue.issues[0]?.message : undefined;
  return { field: f, message: `${f}: ${inner ?? issue.message}` };
}

/** Every issue as `path: rule` lines; each unknown key gets its own line naming its full path. */
export function formatIssues(issues: readonly z.core.$ZodIssue[]): string[] {
  return issues.flatMap((i) => {
    if (i.code !== "unrecognized_keys") return [formatIssue(i).message];
    const at = i.path.map(String).join(".");
    return i.keys.map((k) => `${at ? at + "." : ""}${k}: unknown key`);
  });
}
