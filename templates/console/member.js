// gatehouse hosted sign-in: the waiting page checks on its request every few
// seconds and goes on by itself once the link was confirmed anywhere.
"use strict";

var waiting = document.getElementById("waiting");
if (waiting) {
  var status = document.getElementById("wait-status");
  var check = function () {
    fetch(waiting.dataset.statusUrl, { method: "POST", headers: { Accept: "application/json" } })
      .then(function (response) { return response.json(); })
      .then(function (answer) {
        if (answer.next) { window.location.assign(answer.next); return; }
        if (answer.status === "pending") { setTimeout(check, 2000); return; }
        if (answer.message) { status.textContent = answer.message; }
      })
      .catch(function () { setTimeout(check, 5000); });
  };
  setTimeout(check, 1000);
}
