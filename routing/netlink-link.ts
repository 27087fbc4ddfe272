// Shared rtnetlink plumbing: one socket per reconcile, interface names <-> indexes.
import { createRtNetlink, type RtNetlinkSocket } from "netlink";

/** rtnetlink message flags (linux/netlink.h). */
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
export const NLM_F_DUMP = 0x300;

export const AF_INET = 2;
export const AF_INET6 = 10;
export const afOf = (family: 4 | 6) => (family === 4 ? AF_INET : AF_INET6);

/** Interface name <-> index of the current network namespace. */
export interface LinkIndex {
  byName: Map<string, number>;
  byIndex: Map<number, string>;
}

export async function readLinks(rt: RtNetlinkSocket): Promise<LinkIndex> {
  const links = await rt.getLinks();
  const byName = new Map<string, number>();
  const byIndex = new Map<number, string>();
  for (const l of links) {
    const idx = l.data.index;
    const name = l.attrs.ifname;
    if (idx === undefined || name === undefined) continue;
    byName.set(name, idx);
    byIndex.set(idx, name);
  }
  return { byName, byIndex };
}

/** Opens an rtnetlink socket, runs fn, closes it. */
export async function withRtNetlink<T>(fn: (rt: RtNetlinkSocket) => Promise<T>): Promise<T> {
  const rt = createRtNetlink();
  try {
    return await fn(rt);
  } finally {
    rt.socket.close();
  }
}

/** Errno name of a netlink error ("Request rejected: EEXIST" from the netlink package), e.g. EEXIST/ENOENT/ESRCH. */
export function errnoCode(e: unknown): string | undefined {
  const m = e instanceof Error ? /Request rejected: (\w+)/.exec(e.message) : null;
  return m?.[1];
}
