// Live updates by short polling: every few seconds, fetch this page's live part
// (?fragment=1) and put it in place. Written for this dashboard; no network assets.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !live.dataset.live) { return; }
  var interval = parseInt(live.dataset.live, 10) || 2000;
  var conn = document.getElementById("conn");
  function tick() {
    var url = new URL(window.location.href);
    url.searchParams.set("fragment", "1");
    fetch(url.toString(), {cache: "no-store", credentials: "same-origin"}).then(function (r) {
      return r.text().then(function (body) {
        if (r.status < 500 || r.status === 503) {
          live.innerHTML = body;
          conn.textContent = "";
        }
      });
    }).catch(function () {
      conn.textContent = "dashboard server unreachable";
    }).then(function () { window.setTimeout(tick, interval); });
  }
  window.setTimeout(tick, interval);
})();
