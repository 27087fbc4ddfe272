// pino logger with egressd's stable field names. Level from EGRESSD_LOG_LEVEL
// (or the config); pretty output when stderr is a terminal.
import { pino, type Logger } from "pino";

export type { Logger };

const LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/** A log level's name, or an error that lists the valid ones. */
export function checkLogLevel(level: string, where: string): string {
  if (!LEVELS.includes(level))
    throw new Error(`${where}: ${JSON.stringify(level)} is not a log level (${LEVELS.join(", ")})`);
  return level;
}

/** Throws (see checkLogLevel) on a level that is not one. */
export function createLogger(opts: { level?: string; pretty?: boolean; name?: string } = {}): Logger {
  const env = process.env.EGRESSD_LOG_LEVEL;
  const level =
    opts.level !== undefined
      ? checkLogLevel(opts.level, "--log-level")
      : env
        ? checkLogLevel(env, "EGRESSD_LOG_LEVEL")
        : "info";
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
