// The gallery while photos are classified (poll.js swaps each card when its answer arrives):
// the species filter gains the species of photos answered after the page loaded, and the
// "being classified" banner goes once no photo on the page is still classifying.
(function () {
  "use strict";

  function addSpeciesOption(select, key, name) {
    if (!key || select.querySelector('option[value="' + CSS.escape(key) + '"]')) return;
    var option = new Option(name || key, key), options = Array.prototype.slice.call(select.options, 1);
    var before = options.find(function (o) { return o.text.localeCompare(option.text) > 0; });
    select.insertBefore(option, before || null);
  }

  function update() {
    var gallery = document.getElementById("gallery"), select = document.getElementById("species");
    if (!gallery) return;
    if (select) {
      gallery.querySelectorAll('[data-photo-status="done"] [data-species]').forEach(function (el) {
        addSpeciesOption(select, el.dataset.species, el.dataset.speciesName);
      });
    }
    if (!gallery.querySelector('[data-photo-status="pending"]')) {
      document.querySelectorAll(".message.while-classifying").forEach(function (banner) { banner.remove(); });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var gallery = document.getElementById("gallery");
    if (!gallery) return;
    update();
    new MutationObserver(update).observe(gallery, { childList: true, subtree: true });
  });
})();
