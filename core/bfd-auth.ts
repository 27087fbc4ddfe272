// BFD authentication settings (RFC 5880 section 6.7) and the rules they must
// meet. Pure: the config validation and the BFD sessions both read it.
export type BfdAuthType = "keyed-sha1" | "meticulous-keyed-sha1";

export interface BfdAuthConfig {
  type: BfdAuthType;
  /** Auth Key ID carried in every packet, 0-255; both sides must agree. */
  keyId: number;
  /** The shared key: 1 to 20 bytes (as UTF-8). A secret: never logged. */
  secret: string;
}

export const AUTH_TYPE_CODE: Record<BfdAuthType, number> = { "keyed-sha1": 4, "meticulous-keyed-sha1": 5 };
/** What is wrong with an authentication config, or undefined. Never repeats the secret. */
export function authConfigProblem(a: BfdAuthConfig): string | undefined {
  if (!(a.type in AUTH_TYPE_CODE)) return `unknown authentication type ${JSON.stringify(a.type)}`;
  if (!Number.isInteger(a.keyId) || a.keyId < 0 || a.keyId > 255) return `key id ${a.keyId} is not 0-255`;
  return keyProblem(a.secret);
}

/** What is wrong with a key: SHA1 authentication takes 1 to 20 bytes. Never repeats the key. */
export function keyProblem(secret: string): string | undefined {
  const bytes = Buffer.byteLength(secret, "utf8");
  if (bytes < 1 || bytes > 20) return `the key is ${bytes} bytes; SHA1 authentication takes 1 to 20`;
  return undefined;
}
