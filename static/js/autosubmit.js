// A <select data-autosubmit> submits its form when changed (the gallery's species filter):
// a handler here, not an inline onchange, so the Content-Security-Policy allows no inline script.
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches && target.matches("select[data-autosubmit]") && target.form) target.form.submit();
  });
})();
