// The console's only script: live progress on a job page. Every page works without it.
"use strict";
(function () {
  var job = document.getElementById("job");
  if (!job || job.dataset.running !== "true") return;
  var url = job.dataset.status;
  function set(id, text) {
    var el = document.getElementById(id);
    if (el) el.textContent = text;
  }
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (s) {
        set("job-state", s.state);
        set("job-names", String(s.names));
        set("job-tarballs", String(s.tarballs));
        set("job-bytes", String(s.bytes));
        if (s.lines) {
          var list = document.getElementById("job-lines");
          list.replaceChildren.apply(list, s.lines.map(function (line) {
            var li = document.createElement("li");
            li.textContent = line;
            return li;
          }));
        }
        if (s.running) setTimeout(poll, 1000);
      })
      .catch(function () { setTimeout(poll, 3000); });
  }
  setTimeout(poll, 500);
})();
