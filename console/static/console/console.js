/* ConPaaS console: upload with progress and drag and drop, copy buttons. No build step. */
(function () {
  "use strict";

  function setupUpload(form) {
    var input = form.querySelector('input[type="file"]');
    var zone = form.querySelector("[data-dropzone]");
    var progress = form.querySelector("[data-upload-progress]");
    var status = form.querySelector("[data-upload-status]");
    var error = form.querySelector("[data-upload-error]");
    var button = form.querySelector('button[type="submit"]');
    // The server refuses a bigger body before reading it (413), and a browser still sending may
    // see only a closed connection: the same refusal is said here before anything is sent.
    var limitMb = Number(form.getAttribute("data-upload-limit-mb")) || 0;

    function showError(text) {
      error.textContent = text;
      error.hidden = !text;
      if (text) zone.classList.add("invalid"); else zone.classList.remove("invalid");
    }

    ["dragenter", "dragover"].forEach(function (name) {
      zone.addEventListener(name, function (event) {
        event.preventDefault();
        zone.classList.add("dragging");
      });
    });
    ["dragleave", "drop"].forEach(function (name) {
      zone.addEventListener(name, function () { zone.classList.remove("dragging"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      if (event.dataTransfer && event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
        input.dispatchEvent(new Event("change", { bubbles: true }));
      }
    });
    input.addEventListener("change", function () {
      showError("");
      status.textContent = input.files.length ? "Selected " + input.files[0].name + "." : "";
    });

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!input.files.length) {
        showError("Choose an archive to upload.");
        input.focus();
        return;
      }
      if (limitMb && input.files[0].size > limitMb * 1048576) {
        showError("Upload refused: the upload is larger than the limit of " + limitMb + " MB.");
        return;
      }
      showError("");
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) {
          progress.value = Math.round((e.loaded / e.total) * 100);
          status.textContent = "Uploading… " + progress.value + "%";
        }
      });
      xhr.addEventListener("load", function () {
        var body = {};
        try { body = JSON.parse(xhr.responseText); } catch (ignored) { body = {}; }
        button.disabled = false;
        progress.hidden = true;
        if (xhr.status >= 200 && xhr.status < 300 && body.ok) {
          status.textContent = body.message;
          form.reset();
          if (window.htmx) window.htmx.trigger(document.body, "conpaas-changed");
        } else {
          status.textContent = "";
          // The console's own refusals say `error`; the early ones (413 over the limit) `detail`.
          showError(body.error || (body.detail ? "Upload refused: " + body.detail + "." :
            "The upload failed (HTTP " + xhr.status + ")."));
        }
      });
      xhr.addEventListener("error", function () {
        button.disabled = false;
        progress.hidden = true;
        status.textContent = "";
        showError("The upload failed: the control plane did not answer.");
      });
      progress.value = 0;
      progress.hidden = false;
      button.disabled = true;
      status.textContent = "Uploading…";
      xhr.send(new FormData(form));
    });
  }

  function copy(button) {
    var field = document.getElementById(button.getAttribute("data-copy"));
    if (!field) return;
    var done = function () {
      var label = button.textContent;
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(done, function () { field.select(); });
    } else {
      field.select();
      try { if (document.execCommand("copy")) done(); } catch (ignored) { /* the text stays selected */ }
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (button) copy(button);
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-upload]").forEach(setupUpload);
  });
})();
