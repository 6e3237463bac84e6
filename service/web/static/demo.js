// The demo page (/demo, DEMO_MODE only): one button that runs connect.js the way an app would.
import { connectSocialAccounts, resumeSameTab } from "./connect.js";

const select = document.getElementById("user");
const button = document.getElementById("connect");
const status = document.getElementById("status");

const networks = document.getElementById("networks");

function show(state, text) {
  status.setAttribute("data-state", state);
  status.textContent = text;
}

// After "Done": what the user really linked, read through the service (GET /connect/<user>/accounts).
async function showAccounts(option) {
  const link = new URL(option.getAttribute("data-url"), location.href);
  link.pathname += "/accounts";
  try {
    const answer = await fetch(link, { headers: { Accept: "application/json" } });
    const body = await answer.json();
    if (!answer.ok) throw new Error(body.error ? body.error.message : answer.statusText);
    networks.setAttribute("data-networks", body.networks.join(","));
    networks.textContent = body.networks.length ? `Connected: ${body.networks.join(", ")}` : "Connected: none yet";
  } catch (error) {
    networks.textContent = `Linked networks unavailable: ${error.message}`;
  }
}

const returned = resumeSameTab();
if (returned) {
  const user = returned.context && returned.context.user;
  show("linked", `Linked: ${user || "the user"}'s social accounts are connected (same-tab flow).`);
  if (user) select.value = user;
  showAccounts(select.selectedOptions[0]);
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
      if (result.status === "linked") {
        show("linked", `Linked: ${user}'s social accounts are connected.`);
        showAccounts(option);
      }
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
