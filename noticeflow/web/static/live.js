/* noticeflow: live updates of a notice page, without a reload and without a framework.
 *
 * The page works without this script. With it, the page listens to
 * /notices/<id>/stream (server-sent events) and, on each `changed`, fetches
 * /notices/<id>/live with the page's own query (sort, filter, page) and swaps
 * that fragment (count cards, chart, table page, timeline head) into #live.
 */
(function () {
  "use strict";
  var script = document.currentScript || document.querySelector("script[data-notice]");
  var notice = script && script.getAttribute("data-notice");
  var box = document.getElementById("live");
  var status = document.getElementById("live-status");
  if (!notice || !box || !window.EventSource || !window.fetch) {
    return;
  }
  var base = "/notices/" + encodeURIComponent(notice);
  var since = script.getAttribute("data-version") || "";
  var busy = false;
  var again = false;
  var stopped = false;

  function say(text) {
    if (status) {
      status.textContent = text;
    }
  }

  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch(base + "/live" + window.location.search, {
      credentials: "same-origin",
      headers: { Accept: "text/html" },
      cache: "no-store"
    })
      .then(function (response) {
        if (response.redirected || response.status === 401 || response.status === 403) {
          stopped = true;
          source.close();
          throw new Error("signed out");
        }
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        box.innerHTML = html;
        say("Live · updated " + new Date().toLocaleTimeString());
      })
      .catch(function (error) {
        say(stopped ? "Signed out: reload the page to sign in again."
                    : "Could not update (" + error.message + "); retrying on the next change.");
      })
      .then(function () {
        busy = false;
        if (again && !stopped) {
          again = false;
          refresh();
        }
      });
  }

  var source = new EventSource(base + "/stream?since=" + encodeURIComponent(since));
  source.addEventListener("open", function () {
    say("Live: this page updates by itself.");
  });
  source.addEventListener("changed", refresh);
  source.addEventListener("error", function () {
    if (!stopped) {
      say("Live updates paused; reconnecting…");
    }
  });
  window.addEventListener("pagehide", function () {
    source.close();
  });
})();
