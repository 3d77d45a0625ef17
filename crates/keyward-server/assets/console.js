// keyward console: small enhancements over plain forms and links.
// Copy buttons, the row menus (toggle, Escape, arrow keys), and the
// permission panel's "Jump to" filter. Nothing here is needed to submit a form.
"use strict";

function announce(text) {
  const live = document.getElementById("announce");
  if (live) {
    live.textContent = "";
    window.setTimeout(() => { live.textContent = text; }, 30);
  }
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (_) { /* fall back below */ }
  }
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "visually-hidden";
  document.body.appendChild(area);
  area.select();
  let done = false;
  try { done = document.execCommand("copy"); } catch (_) { done = false; }
  area.remove();
  return done;
}

function closeMenus(except) {
  document.querySelectorAll(".menu-button[aria-expanded='true']").forEach((button) => {
    if (button !== except) {
      button.setAttribute("aria-expanded", "false");
      const list = document.getElementById(button.getAttribute("aria-controls"));
      if (list) list.hidden = true;
    }
  });
}

function menuItems(list) {
  return Array.from(list.querySelectorAll("a, button"));
}

document.addEventListener("click", async (event) => {
  const copy = event.target.closest("button.copy");
  if (copy) {
    let text = copy.dataset.copy || "";
    if (copy.dataset.copyAbsolute === "true") text = new URL(text, window.location.href).href;
    const ok = await copyText(text);
    const label = copy.textContent;
    const name = copy.getAttribute("aria-label");
    const shown = ok ? "Copied" : "Copy failed";
    copy.textContent = shown;
    // A button's accessible name keeps its visible text ("Copy Consumer Key" becomes "Copied Consumer Key").
    if (name) copy.setAttribute("aria-label", name.replace(label, shown));
    announce(ok ? "Copied to the clipboard" : "Could not copy; select the text instead");
    window.setTimeout(() => {
      copy.textContent = label;
      if (name) copy.setAttribute("aria-label", name);
    }, 1500);
    return;
  }
  const button = event.target.closest(".menu-button");
  if (button) {
    const list = document.getElementById(button.getAttribute("aria-controls"));
    const open = button.getAttribute("aria-expanded") !== "true";
    closeMenus(button);
    button.setAttribute("aria-expanded", String(open));
    if (list) {
      list.hidden = !open;
      if (open) {
        const first = menuItems(list)[0];
        if (first) first.focus();
      }
    }
    return;
  }
  if (!event.target.closest(".menu-items")) closeMenus(null);
});

document.addEventListener("keydown", (event) => {
  const list = event.target.closest(".menu-items");
  if (event.key === "Escape") {
    const open = document.querySelector(".menu-button[aria-expanded='true']");
    if (open) {
      closeMenus(null);
      open.focus();
    }
    return;
  }
  if (list && (event.key === "ArrowDown" || event.key === "ArrowUp")) {
    event.preventDefault();
    const items = menuItems(list);
    const at = items.indexOf(document.activeElement);
    const next = event.key === "ArrowDown" ? (at + 1) % items.length : (at - 1 + items.length) % items.length;
    items[next].focus();
  }
});

document.addEventListener("input", (event) => {
  const filter = event.target.closest(".perm-filter");
  if (!filter) return;
  const words = filter.value.trim().toLowerCase();
  const sections = document.querySelectorAll("#" + filter.getAttribute("aria-controls") + " .perm-section");
  sections.forEach((section) => {
    const text = section.textContent.toLowerCase();
    section.hidden = words !== "" && !text.includes(words);
  });
});
