// Live pages: the element with data-live names a server-sent-events URL.
// Each message is JSON {"text": {id: text}, "html": {id: markup}}; the
// server renders everything (escaped), this only puts it in place.
(function () {
  "use strict";
  var host = document.querySelector("[data-live]");
  if (!host || !window.EventSource) { return; }
  var status = document.getElementById("live-status");
  function say(text, cls) {
    if (status) { status.textContent = text; status.className = "live-dot " + cls; }
  }
  var source = new EventSource(host.getAttribute("data-live"));
  source.onopen = function () { say("live", "on"); };
  source.onerror = function () {
    say(source.readyState === EventSource.CLOSED ? "disconnected — reload (session may have expired)" : "reconnecting…", "off");
  };
  source.onmessage = function (e) {
    var d;
    try { d = JSON.parse(e.data); } catch (_) { return; }
    var k, el;
    for (k in d.text || {}) {
      el = document.getElementById(k);
      if (el && el.textContent !== d.text[k]) { el.textContent = d.text[k]; }
    }
    for (k in d.html || {}) {
      el = document.getElementById(k);
      if (el) { el.innerHTML = d.html[k]; }
    }
    say("live", "on");
  };
})();
