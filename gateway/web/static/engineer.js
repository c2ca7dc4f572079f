// Engineer screens: fill a textarea from a local file (config, certificates), and the live
// serial monitor (polls the framing events of one port every second). No patient data passes
// here: the monitor's events carry control bytes, frame numbers, lengths and checksum verdicts.
"use strict";

document.querySelectorAll("input[type=file][data-fills]").forEach(function (input) {
  input.addEventListener("change", function () {
    var target = document.getElementById(input.dataset.fills);
    var file = input.files && input.files[0];
    if (!target || !file) { return; }
    var reader = new FileReader();
    reader.onload = function () { target.value = reader.result; };
    reader.readAsText(file);
  });
});

(function () {
  var table = document.getElementById("monitor-events");
  if (!table) { return; }
  var url = table.dataset.source;
  var after = 0;
  var keep = 200;
  var status = document.getElementById("monitor-status");
  function cell(row, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) { td.className = cls; }
    row.appendChild(td);
  }
  function describe(e) {
    if (e.kind === "frame" || e.kind === "bad_frame") {
      var parts = [];
      if (e.frame_number !== null) { parts.push("frame " + e.frame_number); }
      if (e.final !== null) { parts.push(e.final ? "ETX" : "ETB"); }
      if (e.checksum_ok !== null) { parts.push(e.checksum_ok ? "checksum ok" : "checksum BAD"); }
      if (e.problem) { parts.push(e.problem); }
      return parts.join(", ");
    }
    return "";
  }
  function poll() {
    fetch(url + "?after=" + after, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (body) {
        var tbody = table.tBodies[0];
        body.events.forEach(function (e) {
          var row = document.createElement("tr");
          row.className = "ev-" + e.kind;
          cell(row, e.time);
          cell(row, e.direction === "in" ? "device → gateway" : "gateway → device");
          cell(row, e.kind, (e.kind === "NAK" || e.kind === "bad_frame") ? "bad" : "");
          cell(row, String(e.length));
          cell(row, describe(e));
          tbody.insertBefore(row, tbody.firstChild);
          after = Math.max(after, e.seq);
        });
        while (tbody.rows.length > keep) { tbody.deleteRow(tbody.rows.length - 1); }
        if (status) { status.textContent = body.open ? "port open" : "port closed"; }
      })
      .catch(function (err) { if (status) { status.textContent = "monitor paused: " + err.message; } });
  }
  poll();
  setInterval(poll, 1000);
})();
