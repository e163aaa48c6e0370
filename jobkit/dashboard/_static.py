"""The dashboard's stylesheet and its one small script, served by the app itself."""

from __future__ import annotations

from typing import Final

CSS: Final = """\
:root {
  --fg: #1d2433; --muted: #5d6778; --line: #dde2ea; --bg: #f6f7f9; --card: #fff;
  --accent: #2457c5; --ok: #2e8b57; --fail: #e08a1e; --dead: #c62f3a;
  --expired: #8a4fbf; --released: #8c96a5; --run: #2f7fd1; --wait: #b9c2cf;
}
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto,
  "Helvetica Neue", Arial, sans-serif; color: var(--fg); background: var(--bg); }
header { background: #1d2433; color: #fff; padding: 0 20px; display: flex;
  align-items: center; gap: 24px; flex-wrap: wrap; }
header .brand { font-weight: 700; font-size: 16px; padding: 12px 0; }
header nav { display: flex; gap: 4px; flex-wrap: wrap; }
header nav a { color: #c9d3e6; text-decoration: none; padding: 14px 10px;
  border-bottom: 3px solid transparent; }
header nav a:hover { color: #fff; }
header nav a.here { color: #fff; border-bottom-color: #6f9cff; }
header .mode { margin-left: auto; color: #c9d3e6; font-size: 12px; }
main { max-width: 1180px; margin: 0 auto; padding: 18px 20px 40px; }
h1 { font-size: 22px; margin: 4px 0 14px; }
h2 { font-size: 16px; margin: 26px 0 10px; }
p.note, .muted { color: var(--muted); }
a { color: var(--accent); }
section.card, .cards > div { background: var(--card); border: 1px solid var(--line);
  border-radius: 8px; padding: 14px 16px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr));
  gap: 12px; margin-bottom: 8px; }
.cards .n { font-size: 26px; font-weight: 650; }
.cards .what { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .04em; }
table { border-collapse: collapse; width: 100%; background: var(--card);
  border: 1px solid var(--line); border-radius: 8px; overflow: hidden; }
th, td { text-align: left; padding: 7px 10px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { background: #eef1f5; font-weight: 600; font-size: 12px; color: var(--muted);
  text-transform: uppercase; letter-spacing: .03em; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:last-child td { border-bottom: none; }
td.err { color: #7a2530; font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
  font-size: 12px; max-width: 420px; overflow: hidden; text-overflow: ellipsis;
  white-space: nowrap; }
.state { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
  font-weight: 600; color: #fff; background: var(--released); }
.state.queued { background: #6b7a90; } .state.running { background: var(--run); }
.state.succeeded { background: var(--ok); } .state.dead { background: var(--dead); }
.state.cancelled { background: #9aa3af; }
pre { background: #0f1522; color: #e6e9ef; padding: 12px 14px; border-radius: 6px;
  overflow: auto; font-size: 12.5px; line-height: 1.4; max-height: 420px; margin: 0; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 6px 18px;
  margin: 0; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; }
.two { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
@media (max-width: 800px) { .two { grid-template-columns: 1fr; } }
details { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  margin: 8px 0; }
details summary { cursor: pointer; padding: 8px 12px; font-weight: 600; }
details pre { border-radius: 0 0 8px 8px; }
form.inline { display: inline; margin: 0; }
button { font: inherit; border: 1px solid #b8c2d3; background: #fff; color: var(--fg);
  border-radius: 6px; padding: 3px 10px; cursor: pointer; }
button:hover { background: #eef2fa; }
button.danger { border-color: #e3a5ab; color: var(--dead); }
button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
.actions { display: flex; gap: 8px; align-items: center; margin: 6px 0 14px; }
form.filters { display: flex; gap: 10px; flex-wrap: wrap; align-items: end;
  margin-bottom: 12px; }
form.filters label { display: flex; flex-direction: column; font-size: 12px;
  color: var(--muted); gap: 2px; }
select, input[type=text], input[type=password] { font: inherit; padding: 4px 6px;
  border: 1px solid #b8c2d3; border-radius: 6px; background: #fff; }
.pager { margin: 10px 0; display: flex; gap: 14px; }
.flash { background: #e7f4ec; border: 1px solid #b5dcc4; padding: 8px 12px;
  border-radius: 6px; margin-bottom: 12px; }
.flash.error { background: #fbeaec; border-color: #efc0c5; }
.warn { color: var(--dead); font-weight: 600; }
svg.chart { width: 100%; height: auto; background: var(--card);
  border: 1px solid var(--line); border-radius: 8px; display: block; }
svg .grid { stroke: #e7eaf0; stroke-width: 1; }
svg .tick { fill: var(--muted); font-size: 11px; }
svg .ok { fill: var(--ok); } svg .fail { fill: var(--fail); }
svg .dead { fill: var(--dead); } svg .expired { fill: var(--expired); }
svg .released { fill: var(--released); } svg .run { fill: var(--run); }
svg .wait { fill: var(--wait); }
svg polyline.rate { fill: none; stroke: var(--dead); stroke-width: 2; }
svg circle.rate { fill: var(--dead); }
svg .mark { stroke: #1d2433; stroke-opacity: .25; stroke-width: 1; }
.legend { display: flex; gap: 14px; font-size: 12px; color: var(--muted);
  margin: 6px 0 0; flex-wrap: wrap; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 4px; vertical-align: -1px; }
.legend .ok { background: var(--ok); } .legend .fail { background: var(--fail); }
.legend .dead { background: var(--dead); }
.legend .expired { background: var(--expired); }
.legend .run { background: var(--run); } .legend .wait { background: var(--wait); }
.legend .released { background: var(--released); }
.refresh { font-size: 12px; color: var(--muted); }
.login { max-width: 360px; margin: 60px auto; }
.login input { width: 100%; margin: 6px 0 12px; }
"""

JS: Final = """\
// Refresh the part of the page marked live every few seconds, unless the
// reader paused it or the tab is hidden; confirm the actions that say so.
(function () {
  "use strict";
  document.addEventListener("submit", function (e) {
    var ask = e.target.getAttribute("data-confirm");
    if (ask && !window.confirm(ask)) { e.preventDefault(); }
  });
  var live = document.getElementById("live");
  if (!live) { return; }
  var every = Number(live.getAttribute("data-refresh")) * 1000;
  var pause = document.getElementById("pause");
  if (!(every > 0)) { return; }
  window.setInterval(function () {
    if ((pause && pause.checked) || document.hidden) { return; }
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (!text) { return; }
        var doc = new DOMParser().parseFromString(text, "text/html");
        var fresh = doc.getElementById("live");
        if (fresh) { live.replaceWith(fresh); live = fresh; }
      })
      .catch(function () {});
  }, every);
})();
"""

ICON: Final = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#1d2433"/>'
    '<rect x="3" y="9" width="2" height="4" fill="#2e8b57"/>'
    '<rect x="7" y="5" width="2" height="8" fill="#2e8b57"/>'
    '<rect x="11" y="7" width="2" height="6" fill="#e08a1e"/></svg>'
)
