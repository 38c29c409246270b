// The statement upload on /admin/reconciliations: sends the file's bytes as
// the request body (CSRF token in a header), shows the upload's progress,
// then opens the run the server made of it.
(function () {
  "use strict";
  var form = document.getElementById("reconcile-upload");
  if (!form) { return; }
  var bar = document.getElementById("upload-progress");
  var status = document.getElementById("upload-status");
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var file = form.elements.file.files[0];
    if (!file) { status.textContent = "Choose a statement file."; return; }
    var q = "source=" + encodeURIComponent(form.elements.source.value) +
      "&kind=" + encodeURIComponent(form.elements.kind.value) +
      "&window_min=" + encodeURIComponent(form.elements.window_min.value) +
      "&file=" + encodeURIComponent(file.name);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", "/admin/reconciliations/upload?" + q);
    xhr.setRequestHeader("x-csrf-token", form.getAttribute("data-csrf"));
    xhr.setRequestHeader("content-type", "text/csv");
    bar.hidden = false;
    bar.value = 0;
    status.textContent = "Uploading…";
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable) { bar.value = Math.round(100 * e.loaded / e.total); }
    };
    xhr.upload.onload = function () { bar.value = 100; status.textContent = "Uploaded; matching and classifying…"; };
    xhr.onload = function () {
      var body = {};
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = {}; }
      if (xhr.status === 200 && body.run_id) {
        window.location = "/admin/reconciliations/" + encodeURIComponent(body.run_id);
      } else {
        status.textContent = "Refused: " + (body.message || ("HTTP " + xhr.status));
      }
    };
    xhr.onerror = function () { status.textContent = "The upload failed; nothing was imported."; };
    xhr.send(file);
  });
})();
