// gatehouse admin console: conveniences on top of pages that work without them.
"use strict";

// Copy buttons: <button data-copy="input-id" hidden> appears only with script.
document.querySelectorAll("button[data-copy]").forEach(function (button) {
  button.hidden = false;
  button.addEventListener("click", function () {
    var field = document.getElementById(button.dataset.copy);
    field.select();
    var done = function () { button.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
    } else {
      document.execCommand("copy");
      done();
    }
  });
});

// Drag and drop a file onto the upload area.
document.querySelectorAll("[data-dropzone]").forEach(function (zone) {
  var input = zone.querySelector("input[type=file]");
  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) { event.preventDefault(); zone.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function () { zone.classList.remove("over"); });
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    if (event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      var status = document.getElementById("upload-status");
      if (status) { status.textContent = "Ready: " + input.files[0].name; }
    }
  });
});

// Upload with a progress bar; the server's answer replaces the page.
var upload = document.getElementById("upload");
if (upload) {
  upload.addEventListener("submit", function (event) {
    if (!upload.querySelector("input[type=file]").files.length) { return; }
    event.preventDefault();
    var bar = document.getElementById("upload-progress");
    var status = document.getElementById("upload-status");
    var button = upload.querySelector("button[type=submit]");
    button.disabled = true;
    bar.hidden = false;
    var request = new XMLHttpRequest();
    request.open("POST", upload.action);
    request.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) {
        bar.value = Math.round((e.loaded / e.total) * 100);
        status.textContent = "Uploading… " + bar.value + " %";
      }
    });
    request.upload.addEventListener("load", function () { status.textContent = "Checking the file…"; });
    request.addEventListener("load", function () {
      var page = new DOMParser().parseFromString(request.responseText, "text/html");
      document.title = page.title;
      document.body.replaceWith(page.body);
      if (request.responseURL) { history.replaceState(null, "", request.responseURL); }
    });
    request.addEventListener("error", function () {
      status.textContent = "The upload failed. Check the connection and try again.";
      button.disabled = false;
    });
    request.send(new FormData(upload));
  });
}
