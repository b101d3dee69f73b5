// `nfx dlq ...`: the dead-letter stream from the command line.
import { Command, InvalidArgumentError, Option } from "commander";

import { type Channel, CHANNELS } from "../lib/core/subjects.js";
import { getDeadLetter, listDeadLetters, purgeDeadLetters, replayDeadLetter } from "../lib/gateway/dlq.js";
import { cliConfig, withConnections } from "./cli-context.js";

const seqs = (v: string, prev: number[] = []): number[] => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("must be a dead-letter sequence number");
  return [...prev, n];
};

/** Registers `dlq` on the root command. */
export function registerDlqCommands(program: Command): void {
  const dlq = program.command("dlq").description("dead letters: sends whose retries ran out");
  const nats = <T>(fn: (n: Parameters<Parameters<typeof withConnections>[2]>[0]["nats"]) => Promise<T>) => withConnections(cliConfig(program), { nats: true }, ({ nats: n }) => fn(n));
  dlq
    .command("list")
    .description("list dead letters, oldest first")
    .addOption(new Option("--channel <c>", "one channel").choices([...CHANNELS]))
    .action(async (o: { channel?: Channel }) => {
      const all = await nats((n) => listDeadLetters(n, o.channel));
      for (const d of all) console.log(`${String(d.seq).padStart(8)}  ${new Date(d.at).toISOString()}  ${d.channel.padEnd(5)} ${d.notification.id}  ${d.send.user}/${d.send.device}  ${d.reason} after ${d.attempts} attempts`);
      console.log(`${all.length} dead letter(s)`);
    });
  dlq
    .command("show")
    .argument("<seq>", "sequence", (v) => seqs(v)[0])
    .description("print one dead letter with its full context")
    .action(async (seq: number) => console.log(JSON.stringify(await nats((n) => getDeadLetter(n, seq)), null, 2)));
  dlq
    .command("replay")
    .argument("[seq...]", "sequences")
    .option("--all", "every dead letter")
    .description("send dead letters again (each once) and remove them from the stream")
    .action(async (list: string[], o: { all?: boolean }) => {
      await nats(async (n) => {
        const todo = o.all ? (await listDeadLetters(n)).map((d) => d.seq) : list.reduce<number[]>((a, v) => seqs(v, a), []);
        for (const seq of todo) {
          const d = await replayDeadLetter(n, seq, cliConfig(program).endpoints.partitions);
          console.log(`replayed ${seq}: ${d.channel} ${d.notification.id} ${d.send.user}/${d.send.device}`);
        }
      });
    });
  dlq
    .command("purge")
    .argument("[seq...]", "sequences")
    .option("--all", "every dead letter")
    .addOption(new Option("--channel <c>", "with --all: one channel").choices([...CHANNELS]))
    .description("delete dead letters without sending them")
    .action(async (list: string[], o: { all?: boolean; channel?: Channel }) => {
      if (!o.all && list.length === 0) throw new InvalidArgumentError("give sequences or --all");
      const k = await nats((n) => purgeDeadLetters(n, o.all ? { all: true, ...(o.channel ? { channel: o.channel } : {}) } : list.reduce<number[]>((a, v) => seqs(v, a), [])));
      console.log(`purged ${k} dead letter(s)`);
    });
}
