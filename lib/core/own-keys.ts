// Prototype-safe lookups on records built from config or user input: own properties only, Object.prototype names refused.

/**
 * Names every plain object answers through its prototype (`constructor`,
 * `__proto__`, `toString`, `hasOwnProperty`, …). None of them may name a
 * category, template, preference key or any other configured thing: a plain
 * `record[name]` lookup would find the prototype's member instead of nothing.
 */
export const PROTOTYPE_NAMES: ReadonlySet<string> = new Set([...Object.getOwnPropertyNames(Object.prototype), "__proto__", "prototype"]);

/** True when `name` is one of {@link PROTOTYPE_NAMES}. */
export const isPrototypeName = (name: string): boolean => PROTOTYPE_NAMES.has(name);

/** The rule text used wherever a prototype name is refused. */
export const PROTOTYPE_NAME_RULE = "must not be a reserved name (constructor, __proto__, toString and the other Object.prototype members)";

/**
 * `rec[key]` when `key` is an own property of `rec`, else undefined: never a
 * value inherited from Object.prototype. Safe on undefined/null records.
 */
export function ownValue<T>(rec: Readonly<Record<string, T>> | null | undefined, key: string): T | undefined {
  return rec != null && Object.hasOwn(rec, key) ? rec[key] : undefined;
}

/** The value at `path` inside `v`, own properties only at every step ({@link ownValue}); undefined where the path leaves the objects. */
export function ownValueAt(v: unknown, path: readonly string[]): unknown {
  return path.reduce<unknown>((x, k) => (x !== null && typeof x === "object" ? ownValue(x as Record<string, unknown>, k) : undefined), v);
}
