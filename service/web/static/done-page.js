// The "done" page: the `redirect` target Ayrshare's linking page sends the user to after "Done".
// In a popup: post {type: "ayrshare-connect", event: "done"} to the opener — only to the origins the service was
// configured with (FRONTEND_ORIGINS) and its own, so no other site learns about it (notify-opener.js) — then close
// the popup.
// connect.js on the opener checks event.origin and event.source before believing the message.
// With `origin=true` (redirect the opener instead) and a return URL, the opener is sent there.
// Without an opener (same-tab fallback, or Ayrshare already redirected the opener here), go back to the app.
// Once it has told the opener, the page drops window.opener: nothing loaded later in this window can reach the app.
(function () {
  "use strict";
  var root = document.getElementById("done");
  var returnTo = root.getAttribute("data-return-to");
  var redirectOpener = root.getAttribute("data-redirect-opener") === "true";
  var opener = ayrshareConnectNotify.openerOf(window);

  function offerReturnLink() {
    if (returnTo) {
      document.getElementById("done-return").hidden = false;
    }
  }

  if (opener && redirectOpener && returnTo) {
    try {
      opener.location.replace(returnTo);
      window.opener = null;
      window.close();
      return;
    } catch (e) {
      /* the opener cannot be navigated: notify it instead */
    }
  }

  if (opener) {
    ayrshareConnectNotify.notify(opener, { type: "ayrshare-connect", event: "done" }, root);
    window.opener = null;
    window.close();
    // Still here a moment later: the browser refused to close a window it did not open by script.
    window.setTimeout(offerReturnLink, 500);
    return;
  }

  if (returnTo) {
    window.location.replace(returnTo);
    return;
  }
  offerReturnLink();
})();
