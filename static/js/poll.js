// Elements that are still classifying carry data-poll-url: fetch their fragment until the
// server sends one that is no longer pending, then swap it in. No reload, no endless spinner
// (the fragment itself offers Retry when a photo failed or waits too long).
(function () {
  "use strict";
  var INTERVAL_MS = 1500;

  function pollOnce() {
    var pending = document.querySelectorAll("[data-poll-url]");
    if (!pending.length) return;
    Array.prototype.forEach.call(pending, function (element) {
      if (element.dataset.polling === "1") return;
      element.dataset.polling = "1";
      fetch(element.dataset.pollUrl, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          var holder = document.createElement("div");
          holder.innerHTML = html.trim();
          var fresh = holder.firstElementChild;
          if (fresh && fresh.getAttribute("data-photo-status") !== "pending") {
            element.replaceWith(fresh);
          } else if (fresh) {
            // Still classifying: keep polling, but show any new notice (e.g. the Retry offer).
            fresh.dataset.polling = "";
            element.replaceWith(fresh);
          }
        })
        .catch(function () { element.dataset.polling = ""; });
    });
    window.setTimeout(pollOnce, INTERVAL_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    window.setTimeout(pollOnce, INTERVAL_MS);
  });
})();
