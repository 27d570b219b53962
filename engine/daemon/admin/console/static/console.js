/* The console's glue to htmx (no build, no inline script: the pages' CSP allows this origin's files only).
 * - "json-body": the admin API's POST /admin/pauses takes JSON, not a form.
 * - A button with data-refresh="panel ..." calls the admin API (hx-post, hx-delete, hx-swap="none"):
 *   its answer is shown in #flash and the panels named are refreshed at once. */
"use strict";

htmx.defineExtension("json-body", {
  onEvent: function (name, evt) {
    if (name === "htmx:configRequest") {
      evt.detail.headers["Content-Type"] = "application/json";
    }
  },
  encodeParameters: function (xhr, parameters) {
    xhr.overrideMimeType("text/json");
    return JSON.stringify(Object.fromEntries(parameters));
  },
});

function said(xhr) {
  try {
    const body = JSON.parse(xhr.responseText);
    if (body.message) return body.message;
    if (body.error) return body.error;
    return Object.entries(body).map(([k, v]) => k + ": " + (typeof v === "object" ? JSON.stringify(v) : v)).join(", ");
  } catch (e) {
    return xhr.status + " " + xhr.statusText;
  }
}

document.addEventListener("htmx:afterRequest", function (evt) {
  const elt = evt.detail.elt;
  const panels = elt && elt.getAttribute && elt.getAttribute("data-refresh");
  if (!panels) return;
  const xhr = evt.detail.xhr;
  const flash = document.getElementById("flash");
  if (flash) {
    flash.textContent = (evt.detail.successful ? "Done: " : "Refused: ") + said(xhr);
    flash.className = evt.detail.successful ? "flash ok" : "flash bad";
  }
  for (const name of panels.split(" ")) {
    const panel = document.getElementById("panel-" + name);
    if (panel) htmx.trigger(panel, "refresh");
  }
});
