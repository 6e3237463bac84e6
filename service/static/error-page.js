// "Try again" on the service's error pages: a popup closes (its opener still has the Connect button);
// a same-tab visit goes back to the page that sent the user here. Kept out of the HTML for the strict CSP.
document.getElementById("try-again").addEventListener("click", () => {
  if (window.opener && !window.opener.closed) {
    window.close();
  } else {
    history.back();
  }
});
