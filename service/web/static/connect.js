// connect.js — open a user's Ayrshare social-account linking page from a click. No dependencies; an ES module.
//
// Served by the service at /static/connect.js (CORS-enabled, so other origins may import it), or copy it into your
// app. Usage, inside a click handler (call it synchronously: no `await` before it, or popup blockers step in):
//
//   import { connectSocialAccounts } from "https://connect.example.com/static/connect.js";
//   button.addEventListener("click", () => {
//     connectSocialAccounts({ url: signedLink })            // "/connect/<user>?expires=…&signature=…"
//       .then((result) => { if (result.status === "linked") showLinked(result.networks); })  // ["linkedin"] or null
//       .catch((error) => showError(error.message));         // a ConnectError with .code
//   });
//
// Why it works this way:
// - The linking page must be top-level (social networks refuse iframes), so it opens in a popup window, opened
//   synchronously in the click handler so that popup blockers let it through.
// - A blocked popup (window.open returns null) falls back to opening the link in this tab (`fallback: "same-tab"`);
//   after "Done" the service's done page sends the user back and `resumeSameTab()` reports "linked".
// - When the popup reaches the service's done page, that page posts {type: "ayrshare-connect", event: "done"} to
//   this window. The message is believed only if it comes from the popup (event.source) and from the done page's
//   origin (event.origin, by default the origin of `url`).
// - There is no event for a cross-origin window closing, so the popup's `closed` flag is polled.
// - After "Done", the networks the user has linked are read from the service (`<link path>/accounts`, same query,
//   same headers): the promise then carries them. Not reading them (an expired link, the service slow or away)
//   never turns a successful link into an error: `networks` is null instead.

const MESSAGE_TYPE = "ayrshare-connect";
const PENDING_KEY = "ayrshare-connect:pending";
const PENDING_MAX_AGE_MS = 2 * 60 * 60 * 1000;
const CLOSED_POLL_MS = 300;
// The done page posts, then closes itself; the two reach this window separately, so a "closed" is confirmed a
// moment later to let a "done" that is still in flight win.
const CLOSED_GRACE_MS = 400;
// How long "linked" may wait for the linked networks before it resolves without them.
const NETWORKS_TIMEOUT_MS = 5000;

/** A failure the caller can show: `code` is the service's error code (e.g. "link_expired") or one of ours. */
export class ConnectError extends Error {
  constructor(code, message, status) {
    super(message || code);
    this.name = "ConnectError";
    this.code = code;
    this.status = status;
  }
}

let active = null; // the flow in progress: one popup at a time

/**
 * Open the linking page for one user. Call it directly inside a click (or key) handler.
 *
 * options.url          the service's /connect/<user> link: a string (a signed link), or a function returning the
 *                      link or a promise of it (e.g. fetched from your backend at click time)
 * options.headers      e.g. {Authorization: `Bearer ${sessionJwt}`}: the link is first asked for as JSON with these
 *                      headers (JWT callers), then the popup is sent to the linking URL it returns
 * options.credentials  fetch credentials mode for that JSON request ("include" for a session cookie)
 * options.doneOrigin   origin of the done page (default: the origin of `url`)
 * options.fallback     "same-tab" (default) or "none" when the popup is blocked
 * options.popup        {width, height, name}
 * options.context      any JSON value, handed back by resumeSameTab() after a same-tab round trip
 * options.onOpen(win), options.onBlocked(), options.onError(ConnectError)   optional callbacks
 * options.signal       an AbortSignal: closes the popup and rejects with an AbortError
 *
 * Resolves {status: "linked", networks} after "Done" (`networks`: the names of the networks the user has linked, e.g.
 * ["facebook", "linkedin"], read from the service; null when they could not be read), {status: "closed"} when the
 * user closed the popup without "Done", {status: "same-tab"} when the page is navigating to the linking page
 * instead, {status: "superseded"} when a newer call took over the popup. Rejects with a ConnectError when the
 * service answered with an error (error.code) or the popup was blocked with `fallback: "none"` (code
 * "popup_blocked").
 */
export function connectSocialAccounts(options) {
  const opts = normalise(options);
  if (opts.signal && opts.signal.aborted) {
    return Promise.reject(new DOMException("The connect flow was aborted.", "AbortError"));
  }
  // Synchronous on purpose: window.open must run while the click's user activation is live.
  const direct = typeof opts.url === "string" && !opts.needsJson;
  const popup = openPopup(direct ? resolveHref(opts.url) : "about:blank", opts.popup);
  rememberPending(opts.context);

  if (!popup) {
    if (opts.onBlocked) opts.onBlocked();
    if (opts.fallback !== "same-tab") {
      forgetPending();
      return Promise.reject(new ConnectError("popup_blocked", "The browser blocked the popup window."));
    }
    return linkUrl(opts).then(({ target }) => {
      window.location.assign(target);
      return { status: "same-tab" };
    });
  }

  if (active) active.finish({ status: "superseded" });
  if (!direct) showOpening(popup);
  if (typeof popup.focus === "function") popup.focus();
  if (opts.onOpen) opts.onOpen(popup);
  return watch(popup, opts, direct);
}

/**
 * After a same-tab round trip (popup blocked, or `origin=true`), the done page sends the user back with
 * `#ayrshare-connect=linked`. Call this once on page load: it returns {status: "linked", context} when this tab
 * started a connect, else null, and removes the fragment from the address bar.
 */
export function resumeSameTab() {
  const params = new URLSearchParams(window.location.hash.slice(1));
  if (params.get("ayrshare-connect") !== "linked") return null;
  params.delete("ayrshare-connect");
  const rest = params.toString();
  const cleaned = window.location.pathname + window.location.search + (rest ? `#${rest}` : "");
  window.history.replaceState(window.history.state, "", cleaned);
  const pending = readPending();
  forgetPending();
  // Only a connect this tab started counts: a crafted link with the fragment alone proves nothing.
  if (!pending || Date.now() - pending.startedAt > PENDING_MAX_AGE_MS) return null;
  return { status: "linked", context: pending.context };
}

/**
 * The networks a user has linked, read from the service: `url` is the user's /connect/<user> link (the same signed
 * link, or the same `headers` / `credentials` as for connectSocialAccounts); `/accounts` is added to its path.
 * Resolves an array of network names, or null when they could not be read: it never rejects. Useful after
 * resumeSameTab(), whose answer is synchronous and carries no networks.
 *
 * options.headers, options.credentials   as for connectSocialAccounts
 * options.signal                         an AbortSignal: stops the request (resolves null)
 * options.timeout                        milliseconds before giving up (default 5000)
 */
export function linkedNetworks(url, options = {}) {
  let href;
  try {
    href = accountsHref(resolveHref(url));
  } catch {
    return Promise.resolve(null);
  }
  return readNetworks(href, options, options.timeout ?? NETWORKS_TIMEOUT_MS);
}

function watch(popup, opts, direct) {
  return new Promise((resolve, reject) => {
    let link = direct ? resolveHref(opts.url) : null; // the /connect link, once known
    let doneOrigin = opts.doneOrigin || (link ? new URL(link).origin : null);
    let lastError = null;
    let settled = false;
    let closedSeenAt = null;

    const finish = (result, error) => {
      if (settled) return;
      settled = true;
      window.removeEventListener("message", onMessage);
      window.clearInterval(timer);
      if (opts.signal) opts.signal.removeEventListener("abort", onAbort);
      if (active === flow) active = null;
      if (!(result && result.status === "superseded")) forgetPending();
      if (error) reject(error);
      else if (result.status === "linked") {
        // Settled already (no "closed" can follow), but the promise waits for the networks; it never fails on them.
        const networks = link ? readNetworks(accountsHref(link), opts) : Promise.resolve(null);
        networks.then((names) => resolve({ ...result, networks: names }));
      } else resolve(result);
    };
    const flow = { popup, finish };
    active = flow;

    function onMessage(event) {
      if (event.source !== popup || !doneOrigin || event.origin !== doneOrigin) return;
      const data = event.data;
      if (!data || typeof data !== "object" || data.type !== MESSAGE_TYPE) return;
      if (data.event === "done") {
        closeQuietly(popup);
        finish({ status: "linked" });
      } else if (data.event === "error") {
        lastError = new ConnectError(String(data.code || "error"), String(data.message || ""), Number(data.status));
        if (opts.onError) opts.onError(lastError);
      }
    }
    function onAbort() {
      closeQuietly(popup);
      finish(null, new DOMException("The connect flow was aborted.", "AbortError"));
    }
    const timer = window.setInterval(() => {
      if (!popup.closed) {
        closedSeenAt = null;
      } else if (closedSeenAt === null) {
        closedSeenAt = Date.now();
      } else if (Date.now() - closedSeenAt >= CLOSED_GRACE_MS) {
        finish(lastError ? null : { status: "closed" }, lastError);
      }
    }, CLOSED_POLL_MS);

    window.addEventListener("message", onMessage);
    if (opts.signal) opts.signal.addEventListener("abort", onAbort, { once: true });

    if (!direct) {
      linkUrl(opts).then(
        (answer) => {
          if (settled) return;
          link = answer.link;
          if (!doneOrigin) doneOrigin = new URL(link).origin;
          popup.location.replace(answer.target);
        },
        (error) => {
          closeQuietly(popup);
          finish(null, error);
        },
      );
    }
  });
}

// `link`: the service's /connect link. `target`: what the popup (or this tab) loads — the link itself, or, for JWT
// callers, the linking URL the service returns as JSON.
async function linkUrl(opts) {
  let link = opts.url;
  if (typeof link === "function") {
    try {
      link = await link();
    } catch (error) {
      throw new ConnectError("link_unavailable", `Could not get a connect link: ${error && error.message}`);
    }
    if (typeof link !== "string" || !link) throw new ConnectError("link_unavailable", "No connect link was given.");
  }
  const href = resolveHref(link);
  if (!opts.needsJson) return { target: href, link: href };
  let response;
  try {
    response = await fetch(href, {
      headers: { ...opts.headers, Accept: "application/json" },
      credentials: opts.credentials || "same-origin",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
  } catch {
    throw new ConnectError("network_error", "The connect service could not be reached.");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = (body && body.error) || {};
    throw new ConnectError(error.code || `http_${response.status}`, error.message, response.status);
  }
  if (!body || typeof body.url !== "string" || !/^https?:\/\//.test(body.url)) {
    throw new ConnectError("bad_response", "The connect service answered without a linking URL.");
  }
  return { target: body.url, link: href };
}

// `/connect/<user>?…` → `/connect/<user>/accounts?…`: the same caller authentication answers both.
function accountsHref(link) {
  const url = new URL(link);
  url.pathname = `${url.pathname.replace(/\/+$/, "")}/accounts`;
  url.hash = "";
  return url.href;
}

// Resolves the network names, or null: a failure here is never the caller's error.
async function readNetworks(href, opts, timeout = NETWORKS_TIMEOUT_MS) {
  const controller = new AbortController();
  const abort = () => controller.abort();
  const timer = window.setTimeout(abort, timeout);
  if (opts.signal) {
    if (opts.signal.aborted) abort();
    else opts.signal.addEventListener("abort", abort, { once: true });
  }
  try {
    const response = await fetch(href, {
      headers: { ...opts.headers, Accept: "application/json" },
      credentials: opts.credentials || "same-origin",
      cache: "no-store",
      referrerPolicy: "no-referrer",
      signal: controller.signal,
    });
    if (!response.ok) return null;
    const body = await response.json();
    const networks = body && body.networks;
    return Array.isArray(networks) && networks.every((name) => typeof name === "string") ? networks : null;
  } catch {
    return null;
  } finally {
    window.clearTimeout(timer);
    if (opts.signal) opts.signal.removeEventListener("abort", abort);
  }
}

function normalise(options) {
  if (!options || (typeof options.url !== "string" && typeof options.url !== "function")) {
    throw new TypeError("connectSocialAccounts: `url` (a string or a function) is required");
  }
  const popup = { width: 600, height: 720, name: "ayrshare-connect", ...options.popup };
  return {
    ...options,
    popup,
    fallback: options.fallback || "same-tab",
    needsJson: Boolean(options.headers || options.credentials),
    doneOrigin: options.doneOrigin ? new URL(options.doneOrigin).origin : null,
  };
}

function openPopup(href, { width, height, name }) {
  const left = Math.max(0, Math.round(window.screenX + (window.outerWidth - width) / 2));
  const top = Math.max(0, Math.round(window.screenY + (window.outerHeight - height) / 2));
  const features = `popup=yes,width=${width},height=${height},left=${left},top=${top}`;
  let popup = null;
  try {
    popup = window.open(href, name, features);
  } catch {
    popup = null;
  }
  // Some blockers hand back a window that is already closed.
  return popup && !popup.closed ? popup : null;
}

function showOpening(popup) {
  try {
    popup.document.title = "Opening the linking page…";
    popup.document.body.textContent = "Opening the linking page…";
  } catch {
    /* not same-origin (yet): nothing to show */
  }
}

function closeQuietly(popup) {
  try {
    if (!popup.closed) popup.close();
  } catch {
    /* already gone */
  }
}

function resolveHref(link) {
  return new URL(link, window.location.href).href;
}

function rememberPending(context) {
  try {
    window.sessionStorage.setItem(PENDING_KEY, JSON.stringify({ startedAt: Date.now(), context: context ?? null }));
  } catch {
    /* storage disabled: resumeSameTab() will simply report nothing */
  }
}

function readPending() {
  try {
    return JSON.parse(window.sessionStorage.getItem(PENDING_KEY) || "null");
  } catch {
    return null;
  }
}

function forgetPending() {
  try {
    window.sessionStorage.removeItem(PENDING_KEY);
  } catch {
    /* storage disabled */
  }
}
