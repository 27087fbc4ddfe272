// A small /proc file read again and again, through a descriptor kept open.
//
// A procfs file (a seq_file, or a sysctl) is made anew by every read from
// offset 0, so one pread gives its current text: one system call where
// readFileSync makes four (open, fstat, read, close) and fs/promises'
// readFile four trips through the thread pool. Between two reads 100 ms
// apart, /proc/stat took 0.09 ms this way and 0.39 ms with readFileSync on
// these machines; the health checks read such files several times a second.
// One descriptor per path for the life of the process (so a check made again
// at every reload opens nothing new).
import { openSync, readFileSync, readSync } from "node:fs";

const BUFFER_BYTES = 64 * 1024;
const kept = new Map<string, number>();
let buf: Buffer | undefined;

/** The file's text now (throws what open or read throws). */
export function readProcFile(path: string): string {
  let fd = kept.get(path);
  if (fd === undefined) kept.set(path, (fd = openSync(path, "r")));
  buf ??= Buffer.alloc(BUFFER_BYTES);
  const n = readSync(fd, buf, 0, buf.length, 0);
  // Larger than the buffer (/proc/stat on hundreds of CPUs): read whole.
  return n < buf.length ? buf.toString("latin1", 0, n) : readFileSync(path, "latin1");
}

/**
 * The fields of a /proc/PID/stat (or task/TID/stat) text after the command
 * name, which may hold spaces and parentheses and ends at the last ")":
 * [0] is the state, field 3 of proc(5), so proc(5)'s field N is [N - 3].
 */
export function statFields(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
}
