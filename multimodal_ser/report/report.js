// multimodal-ser report: draws each recording's lanes on a canvas; hover reads a segment, click pins it,
// the mouse wheel zooms, dragging pans, a double click resets. No library, no network.
(function () {
  "use strict";
  window.addEventListener("error", function (e) { document.body.setAttribute("data-error", String(e.message)); });
  var colors = JSON.parse(document.getElementById("mser-colors").textContent);
  var COLORS = colors.emotions, SENTIMENT = colors.sentiments, PALETTE = colors.palette;
  var LABEL_W = 170, LANE_H = 30, AXIS_H = 22;
  var recordings = JSON.parse(document.getElementById("mser-data").textContent);
  var lanes = JSON.parse(document.getElementById("mser-lanes").textContent);
  var tip = document.getElementById("tip");

  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) { return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]; });
  }
  function clock(t) {
    var m = Math.floor(t / 60), s = t - 60 * m;
    return m + ":" + (s < 10 ? "0" : "") + s.toFixed(s % 1 ? 1 : 0);
  }
  function pct(v) { return v === null ? "-" : Math.round(100 * v) + "%"; }
  // index of the last start <= t in a sorted array (-1 if none)
  function lastStart(starts, t) {
    var lo = 0, hi = starts.length - 1, found = -1;
    while (lo <= hi) {
      var mid = (lo + hi) >> 1;
      if (starts[mid] <= t) { found = mid; lo = mid + 1; } else { hi = mid - 1; }
    }
    return found;
  }
  function hit(starts, ends, t) {
    for (var i = lastStart(starts, t); i >= 0 && i >= lastStart(starts, t) - 4; i--) {
      if (ends[i] >= t) { return i; }
    }
    return -1;
  }

  function Chart(rec, section) {
    this.rec = rec;
    this.canvas = section.querySelector("canvas");
    this.pinned = section.querySelector(".detail");
    this.t0 = 0;
    this.t1 = Math.max(rec.duration, 1);
    this.drag = null;
    this.bind();
    this.draw();
  }
  Chart.prototype.x = function (t) { return LABEL_W + (t - this.t0) / (this.t1 - this.t0) * (this.w - LABEL_W); };
  Chart.prototype.time = function (x) { return this.t0 + (x - LABEL_W) / (this.w - LABEL_W) * (this.t1 - this.t0); };
  Chart.prototype.draw = function () {
    var c = this.canvas, ratio = window.devicePixelRatio || 1;
    this.w = c.clientWidth || 900;
    var h = AXIS_H + lanes.length * LANE_H;
    c.width = Math.round(this.w * ratio);
    c.height = Math.round(h * ratio);
    c.style.height = h + "px";
    var g = c.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, this.w, h);
    g.font = "12px sans-serif";
    for (var k = 0; k < lanes.length; k++) {
      var y = k * LANE_H;
      g.fillStyle = k % 2 ? "#ffffff" : "#f6f6f6";
      g.fillRect(0, y, this.w, LANE_H);
      g.fillStyle = "#222";
      g.font = "bold 12px sans-serif";
      g.fillText(lanes[k][0], 6, y + 13);
      g.fillStyle = "#777";
      g.font = "9px sans-serif";
      g.fillText(lanes[k][1], 6, y + 25);
      g.save();
      g.beginPath();
      g.rect(LABEL_W, y, this.w - LABEL_W, LANE_H);
      g.clip();
      if (this.rec.present[lanes[k][0]]) {
        this.lane(g, lanes[k][0], y + 3, LANE_H - 6);
      } else {
        g.fillStyle = "#999";
        g.font = "italic 11px sans-serif";
        g.fillText("not analysed in this timeline", LABEL_W + 8, y + 19);
      }
      g.restore();
    }
    this.axis(g, lanes.length * LANE_H);
  };
  Chart.prototype.bar = function (g, s, e, y, h, color) {
    var a = this.x(s), b = this.x(e);
    if (b < LABEL_W || a > this.w) { return; }
    g.fillStyle = color;
    g.fillRect(a, y, Math.max(b - a, 1), h);
  };
  Chart.prototype.lane = function (g, name, y, h) {
    var seg = this.rec.seg, labels = this.rec.labels, i;
    if (name === "speakers") {
      for (i = 0; i < seg.s.length; i++) {
        if (seg.spk[i] >= 0) { this.bar(g, seg.s[i], seg.e[i], y, h, PALETTE[seg.spk[i] % PALETTE.length]); }
      }
    } else if (name === "words") {
      var words = this.rec.words;
      g.font = "10px sans-serif";
      for (i = 0; i < words.s.length; i++) {
        this.bar(g, words.s[i], words.e[i], y, h, i % 2 ? "#c9d6e8" : "#a9bcd8");
        var width = this.x(words.e[i]) - this.x(words.s[i]);
        if (width > g.measureText(words.w[i]).width + 2) {
          g.fillStyle = "#123";
          g.fillText(words.w[i], this.x(words.s[i]) + 1, y + h - 8);
        }
      }
    } else if (name === "confidence" || name === "agreement") {
      var values = name === "confidence" ? seg.conf : seg.agr;
      for (i = 0; i < seg.s.length; i++) {
        if (values[i] !== null) { this.bar(g, seg.s[i], seg.e[i], y + h * (1 - values[i]), h * values[i], values[i] < 0.75 && name === "agreement" ? "#e8a33d" : "#5b7db1"); }
      }
    } else if (name === "engagement") {
      var eng = this.rec.eng;
      for (var f = 0; f < eng.faces.length; f++) {
        g.strokeStyle = PALETTE[f % PALETTE.length];
        g.lineWidth = 1.5;
        g.beginPath();
        var open = false;
        for (i = 0; i < eng.t.length; i++) {
          var v = eng.v[f][i];
          if (v === null) { open = false; continue; }
          var px = this.x(eng.t[i] + 0.5), py = y + h * (1 - v);
          if (open) { g.lineTo(px, py); } else { g.moveTo(px, py); open = true; }
        }
        g.stroke();
      }
    } else {
      var key = { voice: "voice", "words' emotion": "text", face: "face", fused: "fused" }[name];
      var conf = seg[key === "fused" ? "conf" : key + "C"];
      for (i = 0; i < seg.s.length; i++) {
        if (seg[key][i] < 0) { continue; }
        g.globalAlpha = 0.35 + 0.65 * (conf[i] === null ? 1 : conf[i]);
        this.bar(g, seg.s[i], seg.e[i], y, key === "text" ? h - 5 : h, COLORS[labels[seg[key][i]]]);
        g.globalAlpha = 1;
        if (key === "text" && seg.sent[i] >= 0) { this.bar(g, seg.s[i], seg.e[i], y + h - 3, 3, SENTIMENT[this.rec.sentiments[seg.sent[i]]]); }
      }
    }
  };
  Chart.prototype.axis = function (g, y) {
    var span = this.t1 - this.t0, steps = [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600], step = steps[steps.length - 1];
    for (var k = 0; k < steps.length; k++) { if (span / steps[k] <= (this.w - LABEL_W) / 80) { step = steps[k]; break; } }
    g.fillStyle = "#444";
    g.strokeStyle = "#ccc";
    g.font = "11px sans-serif";
    for (var t = Math.ceil(this.t0 / step) * step; t <= this.t1; t += step) {
      var px = this.x(t);
      g.beginPath();
      g.moveTo(px, 0);
      g.lineTo(px, y + 4);
      g.stroke();
      g.fillText(clock(t), px - 10, y + 16);
    }
  };
  Chart.prototype.describe = function (lane, t) {
    var rec = this.rec, seg = rec.seg, labels = rec.labels, i;
    if (lane === "words") {
      i = hit(rec.words.s, rec.words.e, t);
      return i < 0 ? "" : "<b>" + esc(rec.words.w[i]) + "</b> " + clock(rec.words.s[i]) + "-" + clock(rec.words.e[i]) + " <i>(words.parquet)</i>";
    }
    if (lane === "engagement") {
      i = lastStart(rec.eng.t, t);
      if (i < 0) { return ""; }
      var parts = [];
      for (var f = 0; f < rec.eng.faces.length; f++) { parts.push("face " + rec.eng.faces[f] + ": " + pct(rec.eng.v[f][i])); }
      return "<b>engagement</b> at " + clock(rec.eng.t[i]) + "<br>" + parts.join("<br>") + "<br><i>from face geometry; no expression</i>";
    }
    i = hit(seg.s, seg.e, t);
    if (i < 0) { return ""; }
    function label(key, conf) { return seg[key][i] < 0 ? "-" : labels[seg[key][i]] + " " + pct(seg[conf][i]); }
    return "<b>" + clock(seg.s[i]) + "-" + clock(seg.e[i]) + "</b>" + (seg.spk[i] >= 0 ? " " + esc(rec.speakers[seg.spk[i]]) + (rec.spkFace[seg.spk[i]] !== null ? " (face " + rec.spkFace[seg.spk[i]] + ")" : "") : "") +
      (seg.txt[i] ? "<br>&ldquo;" + esc(seg.txt[i]) + "&rdquo;" : "") +
      "<br>voice: " + label("voice", "voiceC") + "; words: " + label("text", "textC") +
      (seg.sent[i] >= 0 ? " (" + rec.sentiments[seg.sent[i]] + ")" : "") + "; face: " + label("face", "faceC") +
      "<br><b>fused: " + label("fused", "conf") + "</b>" + (seg.from[i] ? " from " + esc(seg.from[i]) : "") + "; agreement " + pct(seg.agr[i]);
  };
  Chart.prototype.at = function (event) {
    var box = this.canvas.getBoundingClientRect(), x = event.clientX - box.left, k = Math.floor((event.clientY - box.top) / LANE_H);
    if (x < LABEL_W || k < 0 || k >= lanes.length) { return ""; }
    return this.describe(lanes[k][0], this.time(x));
  };
  Chart.prototype.bind = function () {
    var self = this, c = this.canvas;
    c.addEventListener("mousemove", function (e) {
      if (self.drag !== null) {
        var shift = (self.drag - e.clientX) / (self.w - LABEL_W) * (self.t1 - self.t0);
        self.pan(shift);
        self.drag = e.clientX;
        return;
      }
      var html = self.at(e);
      tip.style.display = html ? "block" : "none";
      tip.innerHTML = html;
      tip.style.left = Math.min(e.pageX + 12, window.innerWidth - 380) + "px";
      tip.style.top = e.pageY + 12 + "px";
    });
    c.addEventListener("mouseleave", function () { tip.style.display = "none"; self.drag = null; });
    c.addEventListener("mousedown", function (e) { self.drag = e.clientX; self.moved = e.clientX; });
    c.addEventListener("mouseup", function (e) {
      if (Math.abs(e.clientX - self.moved) < 3) { self.pinned.innerHTML = self.at(e) || self.pinned.innerHTML; }
      self.drag = null;
    });
    c.addEventListener("wheel", function (e) {
      e.preventDefault();
      var box = c.getBoundingClientRect(), t = self.time(e.clientX - box.left), f = e.deltaY > 0 ? 1.25 : 0.8;
      var full = Math.max(self.rec.duration, 1), span = Math.min(Math.max((self.t1 - self.t0) * f, 1), full);
      self.t0 = Math.max(0, Math.min(t - (t - self.t0) * span / (self.t1 - self.t0), full - span));
      self.t1 = self.t0 + span;
      self.draw();
    }, { passive: false });
    c.addEventListener("dblclick", function () { self.t0 = 0; self.t1 = Math.max(self.rec.duration, 1); self.draw(); });
  };
  Chart.prototype.pan = function (shift) {
    var span = this.t1 - this.t0, full = Math.max(this.rec.duration, 1);
    this.t0 = Math.max(0, Math.min(this.t0 + shift, full - span));
    this.t1 = this.t0 + span;
    this.draw();
  };

  var charts = [];
  var sections = document.querySelectorAll("section.recording");
  for (var r = 0; r < recordings.length; r++) { charts.push(new Chart(recordings[r], sections[r])); }
  window.addEventListener("resize", function () { for (var k = 0; k < charts.length; k++) { charts[k].draw(); } });
  document.body.setAttribute("data-rendered", String(charts.length));
  document.body.setAttribute("data-render-ms", performance.now().toFixed(0));
}());
