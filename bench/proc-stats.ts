// Per-process CPU time and peak memory from /proc, for the benchmarks' reports.
import { readFileSync } from "node:fs";

/** CPU seconds (user + system) a process has used so far; 0 if it is gone. */
export const cpuSecs = (pid: number | undefined): number => {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return 0;
  }
};

/** Peak resident memory of a process in bytes (VmHWM); 0 if it is gone. */
export const hwmBytes = (pid: number | undefined): number => {
  try {
    return Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
};

/** Peak resident memory of a process in MB (VmHWM); 0 if it is gone. */
export const hwm = (pid: number | undefined): number => Math.round(hwmBytes(pid) / 1048576);

/** Resident memory of a process now, in bytes (VmRSS); 0 if it is gone. */
export const rssBytes = (pid: number | undefined): number => {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
};
