// The workspace's only script (no build step): live refresh and macro previews.
// Pages work without it; it only spares reloads.
"use strict";

// An element with data-live (a server-sent events URL) and data-fragment (the URL of its
// own HTML) is re-fetched whenever the feed says something it shows has changed, at most
// once per data-throttle milliseconds (a busy desk changes many tickets a second).
function liveRegion(el) {
  var throttle = parseInt(el.dataset.throttle || "150", 10);
  var pending = false;
  function refresh() {
    if (pending) { return; }
    pending = true;
    setTimeout(function () {
      pending = false;
      fetch(el.dataset.fragment, {credentials: "same-origin"}).then(function (r) {
        return r.ok ? r.text() : null;
      }).then(function (html) {
        if (html !== null) { el.innerHTML = html; el.dispatchEvent(new Event("refreshed")); }
      });
    }, throttle);
  }
  var source = new EventSource(el.dataset.live);
  source.addEventListener("change", refresh);
  // Whatever changed before the subscription (or while reconnecting) is read now.
  source.addEventListener("open", refresh);
}

function macroPreview(form) {
  var button = form.querySelector(".preview-button");
  var target = form.querySelector(".preview");
  if (!button || !target) { return; }
  button.addEventListener("click", function () {
    var params = new URLSearchParams();
    form.querySelectorAll("[name]").forEach(function (input) {
      if (input.name !== "csrf_token") { params.append(input.name, input.value); }
    });
    fetch(form.dataset.preview + "?" + params.toString(), {credentials: "same-origin"})
      .then(function (r) { return r.text(); })
      .then(function (html) { target.innerHTML = html; });
  });
}

// The macro editor: the draft as it stands (with the session's CSRF field) rendered by the
// server for the chosen ticket.
function draftPreview(form) {
  var button = form.querySelector(".preview-button");
  var target = form.querySelector(".preview");
  if (!button || !target) { return; }
  button.addEventListener("click", function () {
    fetch(form.dataset.previewPost, {method: "POST", body: new FormData(form),
                                     credentials: "same-origin"})
      .then(function (r) { return r.text(); })
      .then(function (html) { target.innerHTML = html; });
  });
}

// Reports are in the viewer's time zone: a first visit without one asks for the browser's.
function viewerTimeZone(form) {
  var params = new URLSearchParams(window.location.search);
  var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  if (params.has("tz") || !zone || zone === "UTC") { return; }
  params.set("tz", zone);
  window.location.replace(form.action + "?" + params.toString());
}

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("form[data-viewer-tz]").forEach(viewerTimeZone);
  document.querySelectorAll("form[data-preview-post]").forEach(draftPreview);
  document.querySelectorAll("[data-live]").forEach(liveRegion);
  document.querySelectorAll("form[data-preview]").forEach(macroPreview);
});
