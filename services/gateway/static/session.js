// Login state from the auth service on the same origin: whether the feed is logged in to Upstox
// and until when. The token itself never reaches the page. Only the signed-in operator (auth's
// HttpOnly cookie, sent along by the browser) also learns who, and gets the CSRF token that
// logging out needs.

/** GET /session -> {logged_in, valid, expires_at} for anyone; the operator also gets
 * {user_id, user_name, operator: true, csrf_token}; {available: false} when auth is down. */
export async function fetchSession(fetchImpl = window.fetch.bind(window)) {
  try {
    const res = await fetchImpl("/session", {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      cache: "no-store",
    });
    if (!res.ok) return { available: false, status: res.status };
    const body = await res.json();
    return { available: true, ...body };
  } catch {
    return { available: false };
  }
}

export function login(loc = window.location) {
  // A plain navigation: the auth service redirects through Upstox's dialog and back.
  loc.assign("/authorize");
}

// Where the operator signs in (auth's own page, behind the front).
export const OPERATOR_PAGE = "/auth/";

export async function logout(csrfToken, fetchImpl = window.fetch.bind(window)) {
  const res = await fetchImpl("/logout", {
    method: "POST",
    credentials: "same-origin",
    headers: { Accept: "application/json", "X-CSRF-Token": csrfToken || "" },
  });
  return res.ok;
}

/** expires_at as epoch milliseconds: auth sends epoch seconds (or ISO text). */
export function expiryMs(session) {
  const v = session && session.expires_at;
  if (typeof v === "number") return v > 1e11 ? v : v * 1000;
  if (typeof v === "string") {
    if (/^\d+$/.test(v)) return expiryMs({ expires_at: Number(v) });
    const ms = Date.parse(v);
    return Number.isNaN(ms) ? 0 : ms;
  }
  return 0;
}
