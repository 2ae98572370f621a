// Draws the spend chart (uPlot, stacked bands) from the JSON the server put in the page,
// on load and after every htmx refresh of the panel. No data is fetched from here.
(function () {
  "use strict";
  var COLORS = ["#2456c9", "#e8710a", "#1a7f37", "#b3261e", "#8250df", "#0a7c86", "#9a6700", "#cf222e", "#57606a"];

  function draw(el) {
    var spec = JSON.parse(el.getAttribute("data-chart") || "{}");
    el.innerHTML = "";
    if (!spec.x || spec.x.length === 0 || typeof uPlot === "undefined") { return; }
    var names = Object.keys(spec.series);
    // Stack: each series is drawn as the running sum of itself and those before it.
    var running = spec.x.map(function () { return 0; });
    var data = [spec.x];
    var series = [{}];
    names.forEach(function (name, i) {
      var values = spec.series[name];
      running = running.map(function (acc, j) { return acc + values[j]; });
      data.push(running.slice());
      series.push({ label: name, stroke: COLORS[i % COLORS.length], fill: COLORS[i % COLORS.length] + "33",
                    value: function (u, v) { return v == null ? "-" : "$" + v.toFixed(2); } });
    });
    // Later (larger) bands are drawn first so the smaller ones stay visible on top.
    var bands = [];
    for (var k = names.length; k > 1; k--) { bands.push({ series: [k, k - 1] }); }
    var width = Math.max(280, el.clientWidth || 600);
    new uPlot({ width: width, height: width < 500 ? 200 : 260, series: series, bands: bands,
                axes: [{}, { values: function (u, vals) { return vals.map(function (v) { return "$" + v; }); } }] },
              data, el);
  }

  function drawAll(root) {
    (root || document).querySelectorAll(".chart[data-chart]").forEach(draw);
  }
  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("htmx:afterSwap", function (e) { drawAll(e.target.parentNode || document); });
})();
