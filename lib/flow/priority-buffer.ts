// Per-priority buffers with a bound per lane: items are taken most urgent first, and a full lane's reader waits for room.
import { PRIORITIES, type Priority } from "../core/subjects.js";

/**
 * One FIFO buffer per priority lane, used by the lane runner
 * (`lanes.ts`) and the shard actor. {@link take} always returns the oldest
 * item of the most urgent non-empty lane, so a backlog of bulk never delays
 * critical. Each lane holds up to `capacity` items before its one reader
 * (the loop that pushes into it) is made to wait in {@link waitForRoom};
 * taking from a lane, or {@link wakeAll}, lets that reader go on. Waking and
 * scheduling the consumers of the buffer is the caller's business.
 */
export class PriorityBuffer<T> {
  private readonly lanes: Record<Priority, T[]> = { critical: [], high: [], normal: [], bulk: [] };
  private readonly room: Partial<Record<Priority, () => void>> = {};

  /** `capacity`: items a lane holds before {@link waitForRoom} waits. */
  constructor(readonly capacity: number) {}

  /** Appends `item` to lane `p`. Never refuses: the bound is kept by the reader awaiting {@link waitForRoom} after each push. */
  push(p: Priority, item: T): void {
    this.lanes[p].push(item);
  }

  /** Removes and returns the oldest item of the most urgent non-empty lane, with its lane, and lets that lane's reader go on; null when all are empty. */
  take(): [T, Priority] | null {
    for (const p of PRIORITIES) {
      const lane = this.lanes[p];
      if (lane.length > 0) {
        const item = lane.shift()!;
        const w = this.room[p];
        delete this.room[p];
        w?.();
        return [item, p];
      }
    }
    return null;
  }

  /** Items buffered in lane `p`. */
  size(p: Priority): number {
    return this.lanes[p].length;
  }

  /**
   * Resolves once lane `p` holds fewer than `capacity` items or `stopped()`
   * is true (checked each time the reader is let go). One reader per lane:
   * a second waiter on the same lane replaces the first.
   */
  async waitForRoom(p: Priority, stopped: () => boolean): Promise<void> {
    while (this.lanes[p].length >= this.capacity && !stopped()) await new Promise<void>((r) => (this.room[p] = r));
  }

  /** Lets every waiting reader go on to re-check (call after setting the caller's stop flag). */
  wakeAll(): void {
    for (const p of PRIORITIES) this.room[p]?.();
  }

  /** Every buffered item, most urgent lane first (not removed). */
  *items(): IterableIterator<T> {
    for (const p of PRIORITIES) yield* this.lanes[p];
  }

  /** Removes and returns every buffered item, most urgent lane first. */
  drain(): T[] {
    return PRIORITIES.flatMap((p) => this.lanes[p].splice(0));
  }
}
