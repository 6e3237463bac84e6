// Shared by the done and error pages (a classic script loaded before theirs): tell the window that opened this one,
// only on an origin the service was configured with.
// The target origins: the service's own when the opener is on it (the demo, or an app on the service's origin), else
// each of FRONTEND_ORIGINS but the service's own. A postMessage whose target origin is not the opener's is dropped,
// and Chromium logs a warning for it, so the origin the opener cannot be on is never tried: the same list of allowed
// recipients, without a warning on every success. (With several FRONTEND_ORIGINS, those the opener is not on still
// each log one.)
var ayrshareConnectNotify = (function () {
  "use strict";

  function openerOf(win) {
    try {
      return win.opener && !win.opener.closed ? win.opener : null;
    } catch (e) {
      return null;
    }
  }

  function sameOrigin(opener) {
    try {
      return opener.location.origin === window.location.origin; // reading it throws on another origin
    } catch (e) {
      return false;
    }
  }

  function targetOrigins(opener, listed) {
    var own = window.location.origin;
    if (sameOrigin(opener)) return [own];
    return listed.filter(function (origin) {
      return origin !== own;
    });
  }

  function notify(opener, message, root) {
    var listed = (root.getAttribute("data-notify-origins") || "").split(" ").filter(Boolean);
    targetOrigins(opener, listed).forEach(function (origin) {
      try {
        opener.postMessage(message, origin);
      } catch (e) {
        /* a malformed origin: skip it */
      }
    });
  }

  return { openerOf: openerOf, notify: notify };
})();
