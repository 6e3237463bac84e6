// The service's error pages (kept out of the HTML for the strict CSP).
// 1. In a linking popup, tell the opener what went wrong (connect.js's onError / rejected promise), with the same
//    origin rule as the done page: only FRONTEND_ORIGINS and the service's own origin receive it.
// 2. "Try again": a passing failure (5xx, 429) reloads the same link, which is still valid; a link that cannot work
//    (expired, unknown user, forbidden) closes the popup — the app's Connect button makes a fresh one — or, in a
//    tab of its own, goes back to the page that sent the user here.
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

  button.addEventListener("click", function () {
    if (button.getAttribute("data-retry") === "reload") {
      window.location.reload();
    } else if (opener) {
      window.close();
    } else {
      window.history.back();
    }
  });
})();
