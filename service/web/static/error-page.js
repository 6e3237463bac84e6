// The service's error pages (kept out of the HTML for the strict CSP).
// 1. In a linking popup, tell the opener what went wrong (connect.js's onError / rejected promise), with the same
//    origin rule as the done page (notify-opener.js): only FRONTEND_ORIGINS and the service's own origin receive it.
// 2. The button does what its label says. "Try again", for a passing failure (5xx, 429): reloads the same link, which
//    is still valid, in a popup as in a tab. A link that cannot work (expired, unknown user, forbidden) or a page
//    that is not about a link (an unknown address): "Close this window" in a popup — the app behind it has been told,
//    and its Connect button makes a fresh link — or "Go back" in a tab with a page to go back to; with neither, the
//    button stays hidden and the page's sentence says what to do.
// 3. A link that cannot work has nothing more to tell the opener once reported, so the page drops window.opener. A
//    passing failure keeps it: its "Try again" reloads the link, whose done page must still reach the opener.
(function () {
  "use strict";
  var root = document.getElementById("error");
  var button = document.getElementById("try-again");
  var opener = ayrshareConnectNotify.openerOf(window);

  if (opener) {
    var message = {
      type: "ayrshare-connect",
      event: "error",
      status: Number(root.getAttribute("data-status")),
      code: root.getAttribute("data-code"),
      message: document.getElementById("error-message").textContent,
    };
    ayrshareConnectNotify.notify(opener, message, root);
    if (button.getAttribute("data-retry") !== "reload") {
      window.opener = null;
    }
  }

  var retry = button.getAttribute("data-retry") === "reload";
  if (!retry) {
    if (opener) {
      button.textContent = "Close this window";
      button.hidden = false;
    } else if (window.history.length > 1) {
      button.textContent = "Go back";
      button.hidden = false;
    }
  }

  button.addEventListener("click", function () {
    if (retry) {
      window.location.reload();
    } else if (opener) {
      window.close();
    } else {
      window.history.back();
    }
  });
})();
