// The upload form (#upload-form): checks the chosen files against the limits the form states
// (data-max-files, data-max-bytes, data-mime-types, data-extensions) before anything is sent,
// keeps the good ones in the picker and names each refused file and why; then uploads with a
// progress bar. The server checks everything again. Delegated handlers: they survive the form
// being swapped for the server's answer.
(function () {
  "use strict";
  if (window.butterflyUploadBound) return;  // the form may be included twice (script tag per include)
  window.butterflyUploadBound = true;

  function limitsOf(form) {
    return {
      maxFiles: parseInt(form.dataset.maxFiles, 10),
      maxBytes: parseInt(form.dataset.maxBytes, 10),
      maxMb: form.dataset.maxMb,
      mimeTypes: form.dataset.mimeTypes.split(","),
      extensions: form.dataset.extensions.split(",")
    };
  }

  function problemWith(file, limits) {
    var name = file.name.toLowerCase();
    var extensionOk = limits.extensions.some(function (ext) { return name.slice(-ext.length) === ext; });
    if (limits.mimeTypes.indexOf(file.type) === -1 && !extensionOk) return "not a JPEG, PNG or WebP image";
    if (file.size === 0) return "the file is empty";
    if (file.size > limits.maxBytes) return "larger than " + limits.maxMb + " MB (" + (file.size / 1048576).toFixed(1) + " MB)";
    return null;
  }

  function show(form, kept, refused) {
    var summary = form.querySelector("#file-summary"), list = form.querySelector("#file-problems");
    list.textContent = "";
    refused.forEach(function (item) {
      var li = document.createElement("li");
      li.textContent = item.name + ": " + item.reason + ". Not uploaded.";
      li.setAttribute("data-refused-file", item.name);
      list.appendChild(li);
    });
    list.hidden = refused.length === 0;
    summary.hidden = refused.length === 0;
    summary.textContent = refused.length ? (kept + (kept === 1 ? " photo" : " photos") + " will be uploaded; " +
      refused.length + " left out:") : "";
    form.querySelector("#upload-submit").disabled = kept === 0 && refused.length > 0;
  }

  document.addEventListener("change", function (event) {
    var input = event.target, form = input.form;
    if (!form || form.id !== "upload-form" || input.name !== "images" || !input.files) return;
    var limits = limitsOf(form), keep = new DataTransfer(), refused = [];
    Array.prototype.forEach.call(input.files, function (file) {
      var reason = problemWith(file, limits);
      if (!reason && keep.files.length >= limits.maxFiles) reason = "more than " + limits.maxFiles + " photos at once";
      if (reason) refused.push({ name: file.name, reason: reason });
      else keep.items.add(file);
    });
    if (refused.length) input.files = keep.files;  // the picker keeps the good files only
    show(form, keep.files.length, refused);
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.id !== "upload-form" || !window.FormData || !window.XMLHttpRequest) return;
    event.preventDefault();
    var progress = form.querySelector("#upload-progress"), bar = form.querySelector("#upload-progress-bar"),
        button = form.querySelector("#upload-submit"), xhr = new XMLHttpRequest();
    progress.hidden = false;
    button.disabled = true;
    xhr.open("POST", form.action);
    xhr.setRequestHeader("X-Upload-Form", "1");  // answer {"location"} instead of a redirect (views._upload_done)
    xhr.upload.addEventListener("progress", function (e) {
      if (!e.lengthComputable) return;
      var percent = Math.round(100 * e.loaded / e.total);
      bar.value = percent;
      bar.textContent = percent + "%";
    });
    xhr.addEventListener("load", function () {
      if (xhr.status === 200 && (xhr.getResponseHeader("Content-Type") || "").indexOf("application/json") === 0) {
        window.location.assign(JSON.parse(xhr.responseText).location);  // the photo's page or the gallery
        return;
      }
      // Refused (a message under the field): show the server's form in place of this one.
      var fresh = new DOMParser().parseFromString(xhr.responseText, "text/html").getElementById("upload-form");
      if (fresh) form.replaceWith(document.importNode(fresh, true));
      else { progress.hidden = true; button.disabled = false; window.alert("The upload failed (HTTP " + xhr.status + ")."); }
    });
    xhr.addEventListener("error", function () {
      progress.hidden = true;
      button.disabled = false;
      window.alert("The upload did not reach the server. Check the connection and try again.");
    });
    xhr.send(new FormData(form));
  });
})();
