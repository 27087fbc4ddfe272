// Name patterns shared by the config's schema modules.

/** DNS-label-like names: they end up in nft chain names and log lines. */
export const NAME_PATTERN = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
/** Linux interface names: at most 15 bytes, no '/', ':' or white space. */
export const IFNAME_PATTERN = "^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,14}$";
