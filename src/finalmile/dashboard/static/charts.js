/* finalmile dashboard: draws the charts whose data the server put in <script type="application/json" class="chart-data">,
   asks before a button changes anything, and wires the SQL page. No data arrives any other way. */
(function () {
  "use strict";
  var PALETTE = ["#1f77b4", "#e4572e", "#2e7d32", "#8e44ad", "#f9a825", "#00838f", "#6d4c41", "#c2185b"];
  var STATUS = { ok: "#2e7d32", warning: "#f9a825", alert: "#c62828", "no data": "#9e9e9e" };
  var utc = function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); };

  function spec(el) {
    var node = el.querySelector("script.chart-data");
    return node ? JSON.parse(node.textContent) : null;
  }

  function width(el) { return Math.max(240, Math.min(el.clientWidth || el.parentNode.clientWidth || 600, 1100)); }

  function axes(s, xValues) {
    var x = { label: s.x_label || "", stroke: "#444", grid: { stroke: "#eee" } };
    if (xValues) {
      x.values = xValues; x.rotate = -35; x.size = 60;
      x.splits = function (u) {  /* one tick per bar, thinned so that labels do not overlap */
        var n = u.data[0].length, step = Math.max(1, Math.ceil(n / Math.max(1, Math.floor(u.bbox.width / devicePixelRatio / 45))));
        return u.data[0].filter(function (_, i) { return i % step === 0; });
      };
    }
    return [x, { label: s.y_label || "", stroke: "#444", grid: { stroke: "#eee" }, size: 60 }];
  }

  function spark(el, s) {
    var opts = {
      width: 160, height: 36, legend: { show: false }, cursor: { show: false }, select: { show: false },
      scales: { x: { time: false } }, axes: [{ show: false }, { show: false }],
      series: [{}, { stroke: PALETTE[0], fill: "rgba(31,119,180,0.15)", width: 1, points: { show: false } }]
    };
    return new uPlot(opts, [s.t, s.y], el);
  }

  function time(el, s) {
    var names = Object.keys(s.series).sort();  /* the same variant has the same colour on every chart */
    var data = [s.t].concat(names.map(function (n) { return s.series[n]; }));
    var series = [{ label: "time (UTC)", value: "{YYYY}-{MM}-{DD} {HH}:{mm}" }].concat(names.map(function (n, i) {
      return { label: n, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: false, points: { show: !!s.points } };
    }));
    var scales = s.t.length === 1 ? { x: { range: [s.t[0] - 1800, s.t[0] + 1800] } } : {};  /* one point: an hour around it */
    return new uPlot({ width: width(el), height: 260, tzDate: utc, series: series, axes: axes(s), scales: scales }, data, el);
  }

  function bars(el, s) {
    var names = Object.keys(s.series).sort(), n = s.labels.length;
    var xs = s.labels.map(function (_, i) { return i; });
    var data = [xs].concat(names.map(function (k) { return s.series[k]; }));
    var size = names.length === 2 ? 0.4 : 0.8;
    var series = [{ label: s.x_label || "bin", value: function (u, v) { return v == null ? "" : s.labels[v]; } }]
      .concat(names.map(function (k, i) {
        var colour = PALETTE[i % PALETTE.length];
        return {
          label: k, stroke: colour, fill: colour + (names.length > 2 ? "66" : "cc"), width: 1, points: { show: false },
          paths: uPlot.paths.bars({ size: [size, 80], align: names.length === 2 ? (i === 0 ? -1 : 1) : 0 })
        };
      }));
    var opts = {
      width: width(el), height: 280, series: series,
      scales: { x: { time: false, range: [-0.6, n - 0.4] } },
      axes: axes(s, function (u, splits) { return splits.map(function (i) { return s.labels[i] === undefined ? "" : s.labels[i]; }); })
    };
    return new uPlot(opts, data, el);
  }

  function monitor(el, s) {
    var groups = Object.keys(s.series).sort();
    var joined = uPlot.join(groups.map(function (g) { return [s.series[g].t, s.series[g].y]; }));
    var t = joined[0], status = {};
    groups.forEach(function (g) {
      var byT = {};
      s.series[g].t.forEach(function (ts, i) { byT[ts] = s.series[g].status[i]; });
      status[g] = byT;
    });
    var series = [{ label: "window end (UTC)", value: "{YYYY}-{MM}-{DD} {HH}:{mm}:{ss}" }].concat(groups.map(function (g, i) {
      return { label: g, stroke: PALETTE[i % PALETTE.length], width: 1.5, points: { show: false } };
    }));
    [["warning", "#f9a825"], ["alert", "#c62828"]].forEach(function (level) {
      if (s[level[0]] !== null && s[level[0]] !== undefined) {
        joined.push(t.map(function () { return s[level[0]]; }));
        series.push({ label: level[0] + " threshold", stroke: level[1], dash: [6, 4], width: 1, points: { show: false } });
      }
    });
    var dots = function (u) {
      var ctx = u.ctx;
      groups.forEach(function (g, gi) {
        var ys = u.data[gi + 1];
        for (var i = 0; i < t.length; i++) {
          if (ys[i] == null) continue;
          ctx.beginPath();
          ctx.fillStyle = STATUS[status[g][t[i]]] || "#555";
          ctx.arc(u.valToPos(t[i], "x", true), u.valToPos(ys[i], "y", true), 4 * devicePixelRatio, 0, 2 * Math.PI);
          ctx.fill();
        }
      });
    };
    var opts = { width: width(el), height: 280, tzDate: utc, series: series, axes: axes(s), hooks: { draw: [dots] } };
    return new uPlot(opts, joined, el);
  }

  var KINDS = { spark: spark, time: time, bars: bars, monitor: monitor };

  function draw(root) {
    (root.querySelectorAll ? root : document).querySelectorAll("[data-kind]").forEach(function (el) {
      if (el.dataset.drawn || el.hidden) return;
      var s = spec(el);
      if (!s || !KINDS[el.dataset.kind]) return;
      el.dataset.drawn = "1";
      KINDS[el.dataset.kind](el, s);
    });
  }

  document.addEventListener("submit", function (e) {
    var message = e.target.dataset && e.target.dataset.confirm;
    if (message && !window.confirm(message)) { e.preventDefault(); e.stopImmediatePropagation(); }
    if (e.target.id === "save-form") {
      var box = document.getElementById("sql");
      if (box) document.getElementById("save-sql").value = box.value;
    }
  }, true);

  document.addEventListener("click", function (e) {
    var target = e.target.closest && e.target.closest("[data-show]");
    if (!target) return;
    var el = document.querySelector(target.dataset.show);
    if (el) { el.hidden = !el.hidden; draw(el.parentNode); }
  });

  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSwap", function (e) { draw(e.detail.target); });
})();
