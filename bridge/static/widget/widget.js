/* Help-desk bridge chat widget. Hand-written, no dependencies, no build step.
   Runs under a strict Content-Security-Policy: no inline script, no style attribute; its
   styles live in a constructed stylesheet adopted by its own shadow root (the bridge puts
   widget.css into CSS below when it serves this file). Talks only to the bridge that
   served it. README "Web chat widget" documents the attributes and the protocol. */
(function () {
  "use strict";
  var CSS = "__WIDGET_CSS__";
  var script = document.currentScript;
  if (!script || window.__bridgeChat) return;
  window.__bridgeChat = true;
  var BASE = new URL(script.src).origin;
  var userJwt = script.getAttribute("data-user-jwt") || "";
  // What localStorage keeps (outbox, anonymous token) is one identity's: anonymous, or the
  // JWT's external_id. Never shown to, or sent as, the next person on the browser.
  var STORE = "bridge-chat:" + BASE + (userJwt ? "/" + subject(userJwt) : "/anon");
  var TEXT = {
    en: {
      open: "Open chat", close: "Close chat", title: "Chat with us", message: "Message",
      send: "Send", earlier: "Earlier messages", typing: "An agent is typing…",
      ended: "The agent ended this conversation. A new message starts a new one.",
      rate: "How did we do?", rated: "Thank you! You rated us ", unread: " unread",
      offline: "Connection lost, reconnecting…", failed: "Not sent", sending: "Sending…",
      you: "You", agent: "Agent", read: "Read", expired: "Sign-in expired — reload the page"
    },
    fr: {
      open: "Ouvrir la discussion", close: "Fermer la discussion", title: "Discutez avec nous",
      message: "Message", send: "Envoyer", earlier: "Messages précédents",
      typing: "Un agent écrit…",
      ended: "L’agent a terminé cette conversation. Un nouveau message en commence une nouvelle.",
      rate: "Comment s’est passé cet échange ?", rated: "Merci ! Votre note : ",
      unread: " non lu(s)", offline: "Connexion perdue, reconnexion…", failed: "Non envoyé",
      sending: "Envoi…", you: "Vous", agent: "Agent", read: "Lu",
      expired: "Connexion expirée — rechargez la page"
    }
  };
  var lang = (script.getAttribute("data-lang") || document.documentElement.lang ||
              navigator.language || "en").slice(0, 2).toLowerCase();
  var T = TEXT[lang] || TEXT.en;

  function subject(jwt) {
    try {
      var id = JSON.parse(atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")))
        .external_id;
      if (typeof id === "string") return "user:" + id;
    } catch (e) { /* not a JWT: the bridge refuses it */ }
    return "jwt:" + jwt;
  }
  // Tabs share the store: read, change, write back at once (keeps what others queued).
  var mem = null;
  function load() {
    if (mem) return mem;
    try { return JSON.parse(localStorage.getItem(STORE)) || {}; } catch (e) { return (mem = {}); }
  }
  function update(change) {
    var s = load();
    s.outbox = s.outbox || [];
    change(s);
    try {
      if (s.token || s.outbox.length) localStorage.setItem(STORE, JSON.stringify(s));
      else localStorage.removeItem(STORE);
    } catch (e) { mem = s; }
  }
  function outbox() { return load().outbox || []; }
  // The store all identities once shared: its token (anonymous) stays, its outbox goes.
  try {
    var legacy = JSON.parse(localStorage.getItem("bridge-chat:" + BASE));
    localStorage.removeItem("bridge-chat:" + BASE);
    var anon = "bridge-chat:" + BASE + "/anon";
    if (legacy && legacy.token && !localStorage.getItem(anon)) {
      localStorage.setItem(anon, JSON.stringify({ token: legacy.token, outbox: [] }));
    }
  } catch (e) { /* private mode */ }
  var token = userJwt ? "" : (load().token || "");
  var cursor = null;          // newest event key shown
  var readPos = null;         // newest key reported read
  var before = undefined;     // history cursor (null: no more)
  var shown = {};             // event key -> element
  var unread = 0;
  var ws = null, wsFailures = 0, polling = null, retryMs = 1000, upgradeMs = 30000;

  // ---------------------------------------------------------------- event keys
  function parts(key) {
    var m = /^(\d+)-(\d+)_(\d+)$/.exec(key || "");
    return m ? [+m[1], +m[2], +m[3]] : [0, 0, 0];
  }
  function newer(a, b) {
    if (!b) return true;
    var x = parts(a), y = parts(b);
    for (var i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] > y[i];
    return false;
  }

  // ---------------------------------------------------------------- DOM
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text) node.textContent = text;
    return node;
  }
  var host = el("div");
  host.setAttribute("data-bridge-chat", "");
  var root = host.attachShadow({ mode: "open" });
  var sheet = new CSSStyleSheet();
  sheet.replaceSync(CSS);
  root.adoptedStyleSheets = [sheet];

  var bubble = el("button", "bubble");
  bubble.type = "button";
  bubble.setAttribute("aria-expanded", "false");
  bubble.setAttribute("aria-controls", "bridge-chat-panel");
  // A speech bubble drawn as SVG (no font needs the glyph), hidden from screen readers.
  var NS = "http://www.w3.org/2000/svg";
  var icon = bubble.appendChild(document.createElementNS(NS, "svg"));
  icon.setAttribute("viewBox", "0 0 24 24");
  icon.setAttribute("aria-hidden", "true");
  icon.setAttribute("class", "icon");
  icon.appendChild(document.createElementNS(NS, "path")).setAttribute(
    "d", "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z");
  var badge = bubble.appendChild(el("span", "badge"));
  badge.setAttribute("aria-hidden", "true");
  badge.hidden = true;

  var panel = el("section", "panel");
  panel.id = "bridge-chat-panel";
  panel.hidden = true;
  panel.setAttribute("role", "dialog");
  panel.setAttribute("aria-labelledby", "bridge-chat-title");
  var head = panel.appendChild(el("header", "head"));
  var title = head.appendChild(el("h2", "title", script.getAttribute("data-title") || T.title));
  title.id = "bridge-chat-title";
  var closer = head.appendChild(el("button", "close", "×"));
  closer.type = "button";
  closer.setAttribute("aria-label", T.close);
  var earlier = panel.appendChild(el("button", "earlier", T.earlier));
  earlier.type = "button";
  earlier.hidden = true;
  var log = panel.appendChild(el("div", "log"));
  log.setAttribute("role", "log");
  log.setAttribute("aria-live", "polite");
  log.setAttribute("aria-label", T.title);
  log.tabIndex = 0;
  var typing = panel.appendChild(el("p", "typing"));
  typing.setAttribute("aria-live", "polite");
  var status = panel.appendChild(el("p", "status"));
  status.setAttribute("role", "status");
  var form = panel.appendChild(el("form", "compose"));
  var label = form.appendChild(el("label", "sr", T.message));
  label.htmlFor = "bridge-chat-input";
  var input = form.appendChild(el("textarea", "input"));
  input.id = "bridge-chat-input";
  input.rows = 2;
  input.maxLength = 4096;
  var sendBtn = form.appendChild(el("button", "send", T.send));
  sendBtn.type = "submit";
  root.appendChild(panel);
  root.appendChild(bubble);

  function setUnread(n) {
    unread = n;
    badge.textContent = n > 9 ? "9+" : String(n);
    badge.hidden = !n;
    bubble.setAttribute("aria-label", T.open + (n ? " (" + n + T.unread + ")" : ""));
  }
  setUnread(0);

  function isOpen() { return !panel.hidden; }
  function open() {
    panel.hidden = false;
    bubble.setAttribute("aria-expanded", "true");
    input.focus();
    markRead();
  }
  function close() {
    panel.hidden = true;
    bubble.setAttribute("aria-expanded", "false");
    bubble.focus();
  }
  bubble.addEventListener("click", function () { if (isOpen()) close(); else open(); });
  closer.addEventListener("click", close);
  // Escape closes; Tab stays in the dialog (close button first, Send last).
  panel.addEventListener("keydown", function (e) {
    if (e.key === "Escape") close();
    else if (e.key === "Tab" && root.activeElement === (e.shiftKey ? closer : sendBtn)) {
      e.preventDefault();
      (e.shiftKey ? sendBtn : closer).focus();
    }
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); submit(); }
  });
  var typingSentAt = 0;
  input.addEventListener("input", function () {
    var now = Date.now();
    if (now - typingSentAt > 3000 && ws && ws.readyState === 1) {
      typingSentAt = now;
      ws.send(JSON.stringify({ type: "typing" }));
    }
  });
  form.addEventListener("submit", function (e) { e.preventDefault(); submit(); });
  earlier.addEventListener("click", function () { history(false); });

  function scrollDown() { log.scrollTop = log.scrollHeight; }
  function time(ms) {
    return new Date(ms).toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" });
  }

  // One event, rendered once (its key), in key order.
  function render(ev, atTop) {
    if (shown[ev.key]) return false;
    var node;
    if (ev.type === "visitor") {
      // The pending copy becomes the stored one (and moves to its place).
      node = ev.client_id && root.getElementById("c-" + ev.client_id);
      if (node) {
        node.classList.remove("pending");
        node.removeAttribute("id");
        node.querySelector(".meta").textContent = time(ev.at_ms);
      } else {
        node = bubbleFor("visitor", ev.body, T.you, time(ev.at_ms));
      }
    } else if (ev.type === "agent") {
      node = bubbleFor("agent", ev.body, T.agent, time(ev.at_ms));
      if (!atTop) hideTyping();  // the message the agent was typing has arrived
    } else if (ev.type === "ended") {
      node = el("p", "notice", T.ended);
    } else if (ev.type === "csat") {
      node = csat(ev);
    } else if (ev.type === "csat_answered") {
      // The button's answer is shown as this notice, not as a message of the visitor's.
      var sent = ev.client_id && root.getElementById("c-" + ev.client_id);
      if (sent) sent.remove();
      node = el("p", "notice", T.rated + ev.rating + "/5");
      // That ticket's survey only: an older ticket's stays open to its own answer.
      var asked = root.querySelectorAll('.csat[data-ticket="' + ticketOf(ev.key) + '"] button');
      for (var i = 0; i < asked.length; i++) asked[i].disabled = true;
    } else {
      return false;
    }
    shown[ev.key] = node;
    // After the newest shown event not newer than this one; else first.
    var nodes = log.children, after = log.firstChild;
    for (var j = nodes.length - 1; j >= 0; j--) {
      var k = nodes[j].getAttribute("data-key");
      if (k && !newer(k, ev.key)) { after = nodes[j].nextSibling; break; }
    }
    log.insertBefore(node, after);
    node.setAttribute("data-key", ev.key);
    return ev.type !== "visitor";
  }
  function bubbleFor(who, body, name, meta) {
    var node = el("div", "msg " + who);
    node.appendChild(el("span", "sr", name + ": "));
    node.appendChild(el("p", "body", body));
    node.appendChild(el("span", "meta", meta));
    return node;
  }
  // An event key is <ms>-<seq>_<ticket>.
  function ticketOf(key) { return String(key).split("_")[1] || ""; }
  function csat(ev) {
    var node = el("div", "msg agent csat");
    node.setAttribute("data-ticket", ticketOf(ev.key));
    node.appendChild(el("p", "body", ev.body || T.rate));
    var group = node.appendChild(el("div", "buttons"));
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", T.rate);
    (ev.buttons || []).forEach(function (b) {
      var btn = group.appendChild(el("button", "rate", b.title));
      btn.type = "button";
      btn.addEventListener("click", function () {
        var all = group.querySelectorAll("button");
        for (var i = 0; i < all.length; i++) all[i].disabled = true;
        queue({ body: b.title, button: b.id });
      });
    });
    return node;
  }

  function advance(key) { if (key && newer(key, cursor)) cursor = key; }
  // The badge counts agent messages only.
  function unreadAgent(ev) { return ev.type === "agent" && newer(ev.key, readPos); }
  function receive(events, fromHistory) {
    var fresh = 0, agents = 0;
    events.forEach(function (ev) {
      if (render(ev, fromHistory) && newer(ev.key, readPos)) {
        fresh++;
        if (unreadAgent(ev)) agents++;
      }
      if (!fromHistory && newer(ev.key, cursor)) cursor = ev.key;
    });
    if (!fromHistory) scrollDown();
    if (fresh) {
      if (isOpen() && document.visibilityState === "visible") markRead();
      else if (!fromHistory) setUnread(unread + agents);
    }
  }

  // ---------------------------------------------------------------- HTTP
  function api(path, body) {
    var headers = { "Content-Type": "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    return fetch(BASE + "/widget/v1/" + path, {
      method: "POST", mode: "cors", credentials: "omit", headers: headers,
      body: JSON.stringify(body || {})
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) {
        if (r.status === 401 && path !== "session") { token = ""; throw { retry: true }; }
        if (!r.ok) throw { status: r.status, wait: +(r.headers.get("Retry-After") || 0), data: data };
        return data;
      });
    });
  }

  // A refused user JWT: only a new page can help. session() then never settles, which
  // ends every retry; the outbox stays for this user's next page.
  var refused = "";
  function say(text) { status.textContent = refused || text; }
  function session() {
    if (refused) return new Promise(function () {});
    var body = userJwt ? { user_jwt: userJwt } : {};
    return api("session", body).catch(function (err) {
      if (userJwt && (err.status === 401 || err.status === 403)) {
        refused = T.expired;
        say("");
        console.warn("BridgeChat: data-user-jwt refused (" +
                     ((err.data.error || {}).code || err.status) + "): sign one per page, " +
                     "with a future exp and a kid of BRIDGE_WIDGET_JWT_KEYS.");
        return session();
      }
      if (err.status === 401 && token && !userJwt) { token = ""; return api("session", {}); }
      throw err;
    }).then(function (data) {
      token = data.token;
      if (!userJwt) update(function (s) { s.token = token; });
      readPos = data.read_up_to;
    });
  }

  function history(first) {
    if (before === null) return Promise.resolve();
    return api("history", before ? { before: before } : {}).then(function (data) {
      var events = data.events.slice().reverse();
      if (first) {
        receive(events, false);
        setUnread(events.filter(unreadAgent).length);
      } else {
        receive(data.events, true);
      }
      before = data.before;
      earlier.hidden = !before;
    });
  }

  function markRead() {
    if (!cursor || !newer(cursor, readPos)) { setUnread(0); return; }
    readPos = cursor;
    setUnread(0);
    if (ws && ws.readyState === 1) ws.send(JSON.stringify({ type: "read", key: readPos }));
    else api("read", { key: readPos }).catch(function () {});
  }
  document.addEventListener("visibilitychange", function () {
    if (isOpen() && document.visibilityState === "visible") markRead();
  });

  // ---------------------------------------------------------------- sending (outbox)
  function clientId() {
    var a = new Uint8Array(16);
    crypto.getRandomValues(a);
    return Array.prototype.map.call(a, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }
  function pendingNode(item) {
    var node = bubbleFor("visitor", item.body, T.you, T.sending);
    node.classList.add("pending");
    node.id = "c-" + item.client_id;
    log.appendChild(node);
    scrollDown();
  }
  function submit() {
    var body = input.value.trim();
    if (!body) return;
    input.value = "";
    queue({ body: body });
  }
  function queue(msg) {
    var item = { client_id: clientId(), body: msg.body };
    if (msg.button) item.button = msg.button;
    update(function (s) { s.outbox.push(item); });
    pendingNode(item);
    flush();
  }
  function done(item) {
    update(function (s) {
      s.outbox = s.outbox.filter(function (i) { return i.client_id !== item.client_id; });
    });
  }
  var flushing = false;
  function flush() {
    var item = outbox()[0];
    if (flushing || !token || !item) return;
    flushing = true;
    api("messages", item).then(function () {
      done(item);
      flushing = false;
      flush();
    }, function (err) {
      flushing = false;
      if (err.status && err.status < 500 && err.status !== 429 && err.status !== 408) {
        // Refused for good (too long, malformed): drop it, show it failed.
        done(item);
        var node = root.getElementById("c-" + item.client_id);
        if (node) { node.classList.add("failed"); node.querySelector(".meta").textContent = T.failed; }
        flush();
        return;
      }
      // Network, 5xx, 429: the same client_id again later, stored once.
      var wait = err.wait ? err.wait * 1000 : 2000;
      setTimeout(err.retry ? function () { session().then(flush, flush); } : flush, wait);
    });
  }

  // ---------------------------------------------------------------- real time
  var FORCE_POLL = script.getAttribute("data-transport") === "poll";
  function connect() {
    var sock, ready = false;
    try { sock = ws = new WebSocket(BASE.replace(/^http/, "ws") + "/widget/v1/ws"); }
    catch (e) { return fallback(); }
    sock.onopen = function () {
      sock.send(JSON.stringify({ type: "hello", token: token, after: cursor, seen: nearCursor() }));
    };
    sock.onmessage = function (m) {
      var data;
      try { data = JSON.parse(m.data); } catch (e) { return; }
      if (data.type === "events") { receive(data.events, false); advance(data.cursor); }
      else if (data.type === "ready") {
        ready = true;
        polling = null;
        wsFailures = 0; retryMs = 1000; upgradeMs = 30000;
        say("");
        flush();
      }
      else if (data.type === "typing") showTyping();
      else if (data.type === "error" && data.code !== "too_many_requests") token = "";
    };
    // A socket the page's policy refuses (a CSP connect-src without the ws: URL) fires
    // "error" and is CLOSED, and Chromium never fires "close": the same path, once.
    var gone = false;
    sock.onerror = function () { if (sock.readyState === 3) lost(); };
    sock.onclose = function () { lost(); };
    function lost() {
      if (gone) return;
      gone = true;
      ws = null;
      if (polling) return upgradeLater();
      say(T.offline);
      if (ready) return reconnect();
      // Bridge down (wait), or sockets refused on the way (twice: polling)? HTTP tells.
      api("poll", { after: cursor, wait_s: 0 }).then(function (data) {
        say("");
        receive(data.events, false);
        advance(data.cursor);
        if (++wsFailures > 1) fallback(); else reconnect();
      }, reconnect);
    }
  }
  // The keys shown close to the cursor: the server sends what lies there that we lack.
  function nearCursor() {
    var floor = parts(cursor)[0] - 2000;
    return Object.keys(shown).filter(function (k) { return parts(k)[0] >= floor; }).slice(-200);
  }
  function reconnect() {
    setTimeout(function () {
      (token ? Promise.resolve() : session()).then(connect, reconnect);
    }, jitter());
  }
  function jitter() {
    var ms = retryMs;
    retryMs = Math.min(retryMs * 2, 30000);
    return ms / 2 + Math.random() * ms / 2;
  }
  // While polling, the socket is tried again after 30-60 s, then less often (max 10 min).
  function upgradeLater() {
    setTimeout(connect, upgradeMs + Math.random() * upgradeMs);
    upgradeMs = Math.min(upgradeMs * 2, 300000);
  }
  // Long polling from the same cursor, until a socket is ready.
  function fallback() {
    if (polling) return;
    var me = polling = {};
    say("");
    if (!FORCE_POLL) upgradeLater();
    (function poll() {
      api("poll", { after: cursor, wait_s: 25 }).then(function (data) {
        if (polling !== me) return;
        retryMs = 1000;
        say("");
        receive(data.events, false);
        advance(data.cursor);
        flush();
        poll();
      }, function (err) {
        if (polling !== me) return;
        say(T.offline);
        setTimeout(function () { (token ? Promise.resolve() : session()).then(poll, poll); },
                   err.wait ? err.wait * 1000 : jitter());
      });
    })();
  }
  var typingTimer = 0;
  function showTyping() {
    typing.textContent = T.typing;
    clearTimeout(typingTimer);
    typingTimer = setTimeout(hideTyping, 6000);
  }
  function hideTyping() {
    clearTimeout(typingTimer);
    typing.textContent = "";
  }

  // Session, the newest page of the thread, then real time; again later if any step fails.
  // A page whose origin the bridge refuses gets no readable answer (CORS): to the script
  // that looks like a network failure. After two failed starts the visitor sees that the
  // chat is not connected, and the site owner's console says what to check.
  var bootFailures = 0;
  function boot() {
    before = undefined;
    session().then(function () { return history(true); }).then(function () {
      bootFailures = 0;
      say("");
      flush();
      if (FORCE_POLL) fallback(); else connect();
    }, function (err) {
      bootFailures++;
      if (bootFailures === 2) {
        say(T.offline);
        if (!err || !err.status) {
          console.warn("BridgeChat: cannot reach " + BASE + ". If it is up, add this " +
                       "page's origin (" + location.origin + ") to BRIDGE_WIDGET_ORIGINS " +
                       "on the bridge.");
        }
      }
      setTimeout(boot, jitter());
    });
  }
  function start() {
    document.body.appendChild(host);
    outbox().forEach(pendingNode);
    boot();
  }
  window.BridgeChat = { open: open, close: close };
  if (document.body) start(); else document.addEventListener("DOMContentLoaded", start);
})();
