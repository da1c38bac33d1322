// Review queue (admin): number keys pick a candidate, "/" opens the other-label field, "s" skips.
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("review-form"), other = document.getElementById("other-label"),
        otherSubmit = document.getElementById("other-submit");
    if (!form || !other) return;
    function useOther() { other.disabled = false; otherSubmit.disabled = false; other.focus(); }
    document.querySelector("label[for=other-label]").addEventListener("click", useOther);
    document.addEventListener("keydown", function (e) {
      if (e.target.tagName === "SELECT" || e.target.tagName === "INPUT" || e.ctrlKey || e.metaKey || e.altKey) return;
      if (e.key === "/") { e.preventDefault(); useOther(); return; }
      if (e.key === "s") { document.getElementById("review-skip").click(); return; }
      var button = form.querySelector('button[data-key="' + e.key + '"]');
      if (button) { e.preventDefault(); button.click(); }
    });
  });
})();
