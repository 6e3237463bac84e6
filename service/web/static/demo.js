// The demo page (/demo, DEMO_MODE only): one button that runs connect.js the way an app would.
import { connectSocialAccounts, linkedNetworks, resumeSameTab } from "./connect.js";

const select = document.getElementById("user");
const button = document.getElementById("connect");
const status = document.getElementById("status");

const networks = document.getElementById("networks");

// An error's code goes to data-code (and the page's small print), not into the sentence.
function show(state, text, code) {
  status.setAttribute("data-state", state);
  status.textContent = text;
  if (code) status.setAttribute("data-code", code);
  else status.removeAttribute("data-code");
}

// After "Done": what the user really linked, as connect.js read it through the service (GET /connect/<user>/accounts).
function showNetworks(names) {
  if (!names) {
    networks.removeAttribute("data-networks");
    networks.textContent = "Linked networks unavailable.";
    return;
  }
  networks.setAttribute("data-networks", names.join(","));
  networks.textContent = names.length ? `Connected: ${names.join(", ")}` : "Connected: none yet";
}

const returned = resumeSameTab();
if (returned) {
  const user = returned.context && returned.context.user;
  show("linked", `Linked: ${user || "the user"}'s social accounts are connected (same-tab flow).`);
  if (user) select.value = user;
  // resumeSameTab() answers synchronously, so the networks are asked for here, the way connect.js does it.
  linkedNetworks(select.selectedOptions[0].getAttribute("data-url")).then(showNetworks);
}

button.addEventListener("click", () => {
  const option = select.selectedOptions[0];
  const user = option.value;
  show("waiting", `The linking page for ${user} is open in a popup window…`);
  button.disabled = true;
  networks.removeAttribute("data-networks");
  networks.textContent = "";
  connectSocialAccounts({
    url: option.getAttribute("data-url"),
    context: { user },
    onBlocked: () => show("same-tab", "The popup was blocked: opening the linking page in this tab…"),
    onError: (error) => show("error", error.message, error.code),
  })
    .then((result) => {
      if (result.status === "linked") {
        show("linked", `Linked: ${user}'s social accounts are connected.`);
        showNetworks(result.networks);
      }
      else if (result.status === "closed") show("closed", "The popup was closed before “Done”. Click to try again.");
    })
    .catch((error) => {
      const next = error.code === "link_expired" ? "Reload this page for fresh links" : "Click the button to try again";
      show("error", `${error.message} ${next}.`, error.code);
    })
    .finally(() => {
      button.disabled = false;
    });
});
