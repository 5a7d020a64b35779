// The workspace's only script (no build step): live refresh and macro previews.
// Pages work without it; it only spares reloads.
"use strict";

// What the server answered a script's fetch of a fragment: {html} to swap in, or
// {problem} to show instead. Only an answer marked as a fragment is swapped in: after a
// sign-out in another tab, or a refusal, the server answers a whole page (or 401), which
// must never be pasted into the page.
var FRAGMENT_HEADER = "X-Workspace-Fragment";

function fragmentOf(r) {
  if (r.ok && !r.redirected && r.headers.get(FRAGMENT_HEADER) === "1") {
    return r.text().then(function (html) { return {html: html}; });
  }
  if (r.status === 401 || (r.redirected && new URL(r.url).pathname === "/app/sign-in")) {
    return Promise.resolve({problem: pageText("signedOut")});
  }
  // A refusal is an error page: its message says why (never its whole page).
  return r.text().then(function (html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var reason = doc.querySelector("main .flash-error");
    return {problem: reason ? reason.textContent : pageText("fetchFailed")};
  }, function () { return {problem: pageText("fetchFailed")}; });
}

// The page's own (translated) words for the script's messages: data-* on <body>.
function pageText(key) {
  return document.body.dataset[key] || "Reload the page";
}

function problemNote(text) {
  var note = document.createElement("p");
  note.className = "flash flash-error";
  note.setAttribute("role", "alert");
  note.textContent = text;
  return note;
}

// An element with data-live (a server-sent events URL) and data-fragment (the URL of its
// own HTML) is re-fetched whenever the feed says something it shows has changed, at most
// once per data-throttle milliseconds (a busy desk changes many tickets a second). A fetch
// that fails leaves what is shown and says why above it.
function liveRegion(el) {
  var throttle = parseInt(el.dataset.throttle || "150", 10);
  var pending = false;
  var shownProblem = null;
  function showProblem(text) {
    if (shownProblem === null) {
      shownProblem = problemNote(text);
      el.parentNode.insertBefore(shownProblem, el);
    } else {
      shownProblem.textContent = text;
    }
  }
  function refresh() {
    if (pending) { return; }
    pending = true;
    setTimeout(function () {
      pending = false;
      fetch(el.dataset.fragment, {credentials: "same-origin"}).then(fragmentOf)
        .then(function (answer) {
          if (answer.problem) { showProblem(answer.problem); return; }
          if (shownProblem !== null) { shownProblem.remove(); shownProblem = null; }
          el.innerHTML = answer.html;
          el.dispatchEvent(new Event("refreshed"));
        }, function () { /* offline for a moment: the stream's reconnection reads again */ });
    }, throttle);
  }
  var source = new EventSource(el.dataset.live);
  source.addEventListener("change", refresh);
  // Whatever changed before the subscription (or while reconnecting) is read now.
  source.addEventListener("open", refresh);
  // A stream refused for good (signed out elsewhere: the stream ends, its reconnection is
  // answered 401) is not retried by EventSource: a fetch finds out why, and says so.
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) { refresh(); }
  });
}

function showPreview(target, promise) {
  promise.then(fragmentOf, function () { return {problem: pageText("fetchFailed")}; })
    .then(function (answer) {
      if (answer.problem) {
        target.replaceChildren(problemNote(answer.problem));
      } else {
        target.innerHTML = answer.html;
      }
    });
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
    showPreview(target, fetch(form.dataset.preview + "?" + params.toString(),
                              {credentials: "same-origin"}));
  });
}

// The macro editor: the draft as it stands (with the session's CSRF field) rendered by the
// server for the chosen ticket.
function draftPreview(form) {
  var button = form.querySelector(".preview-button");
  var target = form.querySelector(".preview");
  if (!button || !target) { return; }
  button.addEventListener("click", function () {
    showPreview(target, fetch(form.dataset.previewPost, {
      method: "POST", body: new FormData(form), credentials: "same-origin"}));
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
