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

// The attributes that name the same thing before and after a region is re-read: a ticket's
// row, a thread event, a list's next-page link (whose cursor moves as tickets arrive).
var STABLE_ATTRIBUTES = ["id", "data-ticket", "data-event", "data-more"];
var FOCUSABLE = "a[href], button, input, select, textarea, [tabindex]";

// What identifies the focused element inside a region, to find its equivalent in the
// region's new content: its id, else its href or name, else the nearest ancestor (or
// itself) carrying a stable attribute. null when focus is not inside the region.
function focusedIn(region) {
  var active = document.activeElement;
  if (!active || active === region || !region.contains(active)) { return null; }
  var anchor = null;
  for (var node = active; node && node !== region; node = node.parentElement) {
    var attribute = STABLE_ATTRIBUTES.find(function (a) { return node.hasAttribute(a); });
    if (attribute) { anchor = {attribute: attribute, value: node.getAttribute(attribute)}; break; }
  }
  return {id: active.id, href: active.getAttribute("href"), name: active.getAttribute("name"),
          tag: active.tagName, anchor: anchor};
}

function findSame(region, attribute, value, tag) {
  return Array.prototype.find.call(region.querySelectorAll(tag || "*"), function (node) {
    return node.getAttribute(attribute) === value;
  }) || null;
}

// Focus the new content's equivalent of what was focused; failing that the region itself,
// so that the keyboard stays where it was instead of falling back to the page's start.
function restoreFocus(region, was) {
  if (was === null) { return; }
  var target = (was.id && findSame(region, "id", was.id)) ||
    (was.href && findSame(region, "href", was.href, was.tag)) ||
    (was.name && findSame(region, "name", was.name, was.tag)) || null;
  if (target === null && was.anchor !== null) {
    var anchor = findSame(region, was.anchor.attribute, was.anchor.value);
    if (anchor !== null) {
      target = anchor.matches(FOCUSABLE) ? anchor : anchor.querySelector(FOCUSABLE);
      if (target === null) { anchor.setAttribute("tabindex", "-1"); target = anchor; }
    }
  }
  if (target === null) {
    region.setAttribute("tabindex", "-1");
    target = region;
  }
  target.focus({preventScroll: true});
}

// One short polite announcement per refresh that changed something (data-announce: its
// words; data-status: the id of the visually hidden status element), instead of a live
// region over the whole list, which read all of it out at every refresh. Emptied first:
// the same words set again would not be read again.
function announce(region) {
  var status = document.getElementById(region.dataset.status || "");
  if (!status || !region.dataset.announce) { return; }
  status.textContent = "";
  setTimeout(function () { status.textContent = region.dataset.announce; }, 100);
}

// HTML as the browser writes it out once parsed, to compare with a region's innerHTML.
function serialized(html) {
  var parsed = document.createElement("template");
  parsed.innerHTML = html;
  return parsed.innerHTML.trim();
}

// An element with data-live (a server-sent events URL) and data-fragment (the URL of its
// own HTML) is re-fetched whenever the feed says something it shows has changed, at most
// once per data-throttle milliseconds (a busy desk changes many tickets a second). A fetch
// that fails leaves what is shown and says why above it. New content keeps the keyboard's
// focus where it was and is announced briefly; the same content is left alone.
function liveRegion(el) {
  var throttle = parseInt(el.dataset.throttle || "150", 10);
  var pending = false;
  var shownProblem = null;
  // What the region shows, as the browser writes it out: the read on connecting, which
  // mostly repeats what the page was rendered with, changes nothing and says nothing.
  var shownHtml = el.innerHTML.trim();
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
          var html = serialized(answer.html);
          if (html !== shownHtml) {
            var was = focusedIn(el);
            el.innerHTML = html;
            shownHtml = html;
            restoreFocus(el, was);
            announce(el);
          }
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
