// Redaction of what may hold secrets before it is logged or shown.
/**
 * A URL as it may be shown (logs, /status, errors): user and password are
 * replaced, so credentials in a probe URL never leave the process.
 */
export function redactUrl(text: string): string {
  try {
    const u = new URL(text);
    if (!u.username && !u.password) return text;
    u.username = "redacted";
    u.password = "";
    return u.toString();
  } catch {
    // Not a URL: still hide anything that looks like userinfo before a host.
    return text.replace(/\/\/[^/@\s]*@/, "//redacted@");
  }
}
