// The demo page (/demo, DEMO_MODE only): one button that runs connect.js the way an app would.
import { connectSocialAccounts, resumeSameTab } from "./connect.js";

const select = document.getElementById("user");
const button = document.getElementById("connect");
const status = document.getElementById("status");

function show(state, text) {
  status.setAttribute("data-state", state);
  status.textContent = text;
}

const returned = resumeSameTab();
if (returned) {
  const user = returned.context && returned.context.user;
  show("linked", `Linked: ${user || "the user"}'s social accounts are connected (same-tab flow).`);
  if (user) select.value = user;
}

button.addEventListener("click", () => {
  const option = select.selectedOptions[0];
  const user = option.value;
  show("waiting", `The linking page for ${user} is open in a popup window…`);
  button.disabled = true;
  connectSocialAccounts({
    url: option.getAttribute("data-url"),
    context: { user },
    onBlocked: () => show("same-tab", "The popup was blocked: opening the linking page in this tab…"),
    onError: (error) => show("error", `${error.message} (${error.code})`),
  })
    .then((result) => {
      if (result.status === "linked") show("linked", `Linked: ${user}'s social accounts are connected.`);
      else if (result.status === "closed") show("closed", "The popup was closed before “Done”. Click to try again.");
    })
    .catch((error) => {
      const next = error.code === "link_expired" ? "Reload this page for fresh links" : "Click the button to try again";
      show("error", `${error.message} (${error.code}). ${next}.`);
    })
    .finally(() => {
      button.disabled = false;
    });
});
