// The page's WebSocket to the gateway: the standalone client (./client/tickstream.js, also served
// to other pages at /client/tickstream.js) with what only this page wants: `/ws` on the page's own
// origin, and a refused or expired credential sending the viewer to the sign-in page.

import { FeedConnection as ClientConnection } from "./client/tickstream.js";

export { backoffDelay, needsSignIn, SequenceTracker } from "./client/tickstream.js";

/** The gateway's `/ws` URL on the page's own origin. */
export function feedUrl(loc = window.location) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${loc.host}/ws`;
}

/** The sign-in page, coming back to where the page is now. */
export function signInUrl(loc = window.location) {
  return `/signin?next=${encodeURIComponent(loc.pathname + loc.search)}`;
}

/** The client's connection, going to the sign-in page when the credential is gone. */
export class FeedConnection extends ClientConnection {
  constructor(url, handlers = {}, options = {}) {
    super(url, handlers, {
      signIn: () => window.location.assign(signInUrl()),
      ...options,
    });
  }
}
