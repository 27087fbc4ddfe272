// pino logger with egressd's stable field names. Level from EGRESSD_LOG_LEVEL
// (or the config); pretty output when stderr is a terminal.
import { pino, type Logger } from "pino";

export type { Logger };

const LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

export function createLogger(opts: { level?: string; pretty?: boolean; name?: string } = {}): Logger {
  const env = process.env.EGRESSD_LOG_LEVEL;
  const level = opts.level ?? (env && LEVELS.includes(env) ? env : "info");
  const pretty = opts.pretty ?? (process.stderr.isTTY && process.env.EGRESSD_LOG_FORMAT !== "json");
  return pino(
    {
      name: opts.name ?? "egressd",
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pretty
      ? pino.transport({ target: "pino-pretty", options: { destination: 2, translateTime: "HH:MM:ss.l" } })
      : pino.destination(2),
  );
}
