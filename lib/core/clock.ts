// The policy clock: wall time, or in tests that must watch hours of local time pass (local-time waves), a scaled clock shared by every process through NFX_TEST_CLOCK.

/** A clock: the time now (epoch ms), and how many of its milliseconds pass per real millisecond (1 for wall time). */
export interface PolicyClock {
  (): number;
  scale: number;
}

/**
 * Wall time, unless `NFX_TEST_CLOCK` is `<origin ms>,<scale>,<real start ms>` (tests only, never configuration): then
 * `origin` until the real time `start`, and from then on `origin + (Date.now() - start) * scale`, the same in every
 * process started with it (a test sets it up before anything is decided). Only the shard actor's decisions
 * and the deferred-release actor read it: leases, timeouts and everything else keep wall time.
 */
export function policyClock(env: NodeJS.ProcessEnv = process.env): PolicyClock {
  const v = env.NFX_TEST_CLOCK;
  if (!v) return Object.assign(() => Date.now(), { scale: 1 });
  const [origin, scale, start] = v.split(",").map(Number);
  if (![origin, scale, start].every(Number.isFinite) || scale <= 0) throw new Error(`NFX_TEST_CLOCK: must be <origin ms>,<scale>,<real start ms>; got ${v}`);
  return Object.assign(() => origin + Math.max(0, Date.now() - start) * scale, { scale });
}
