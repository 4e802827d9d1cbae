// rtcbox admin panel: progressive enhancement only. Every page works without this file.
"use strict";

// Fields that matter only for one choice of a radio group or select ("mode=acme").
function updateConditionalFields() {
  document.querySelectorAll("[data-show-when]").forEach((el) => {
    const [name, value] = el.dataset.showWhen.split("=");
    const form = el.closest("form");
    if (!form) return;
    const control = form.elements[name];
    if (!control) return;
    const current = control instanceof RadioNodeList ? control.value : control.value;
    el.hidden = current !== value;
  });
}

// "Copy" buttons next to generated files.
function setUpCopyButtons() {
  if (!navigator.clipboard) return;
  document.querySelectorAll("button.copy").forEach((button) => {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const pre = document.getElementById(button.dataset.copy);
      try {
        await navigator.clipboard.writeText(pre.innerText);
        const label = button.textContent;
        button.textContent = "Copied";
        setTimeout(() => { button.textContent = label; }, 1500);
      } catch {
        button.textContent = "Select the text and copy it";
      }
    });
  });
}

// The verification page: run the checks in place, so the access token stays in its field and
// the results update without leaving the page. Without JavaScript the form posts normally.
function setUpLiveChecks() {
  const form = document.getElementById("verify-form");
  if (!form) return;
  const status = document.getElementById("check-status");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    status.textContent = "Running the checks…";
    try {
      const response = await fetch("/verify", {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams(new FormData(form)),
        credentials: "same-origin",
      });
      const html = await response.text();
      const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("checks");
      if (!response.ok || !fresh) throw new Error("the panel answered " + response.status);
      document.getElementById("checks").replaceWith(fresh);
      status.textContent = "Checked at " + new Date().toLocaleTimeString() + ".";
    } catch (e) {
      status.textContent = "The checks could not be run: " + e.message + ". Reload the page and try again.";
    } finally {
      button.disabled = false;
    }
  });
}

// The phone menu (a <details>): Escape or a tap elsewhere closes it, as menus do.
function setUpMenu() {
  const menu = document.querySelector("details.nav-menu");
  if (!menu) return;
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && menu.open) {
      menu.open = false;
      menu.querySelector("summary").focus();
    }
  });
  document.addEventListener("click", (event) => {
    if (menu.open && !menu.contains(event.target)) menu.open = false;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpMenu();
  updateConditionalFields();
  document.querySelectorAll("form").forEach((f) => f.addEventListener("change", updateConditionalFields));
  setUpCopyButtons();
  setUpLiveChecks();
});
