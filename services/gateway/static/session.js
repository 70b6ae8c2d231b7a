// Login state from the auth service on the same origin: who is logged in to Upstox and until
// when. The token itself never reaches the page; `/session` says only who and until when.

/** GET /session -> {logged_in, user_id, user_name, expires_at, valid} or {available: false}. */
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

export async function logout(fetchImpl = window.fetch.bind(window)) {
  const res = await fetchImpl("/logout", {
    method: "POST",
    credentials: "same-origin",
    headers: { Accept: "application/json" },
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
