// Network & time: the trial's countdown and the reload while a request waits for the box.
// No inline script (the panel's CSP forbids it); without JavaScript the page shows the same
// numbers as of its loading, and a reload updates them.
"use strict";
(function () {
  var counter = document.getElementById("countdown");
  if (counter) {
    var left = parseInt(counter.getAttribute("data-countdown"), 10) || 0;
    var tick = window.setInterval(function () {
      left = Math.max(0, left - 1);
      counter.textContent = String(left);
      if (left === 0) {
        window.clearInterval(tick);
        // Root rolls back within a few seconds of the deadline: show what it did.
        window.setTimeout(function () { window.location.reload(); }, 6000);
      }
    }, 1000);
  }
  var waiting = document.getElementById("waiting");
  if (waiting) {
    var seconds = parseInt(waiting.getAttribute("data-reload"), 10) || 2;
    window.setTimeout(function () { window.location.reload(); }, seconds * 1000);
  }
})();
