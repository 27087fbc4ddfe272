// Name patterns shared by the config's schema modules.

/** DNS-label-like names: they end up in nft chain names and log lines. */
export const NAME_PATTERN = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
/** Linux interface names (core/ip.ts holds the one definition). */
export { IFNAME_PATTERN } from "../ip.js";
