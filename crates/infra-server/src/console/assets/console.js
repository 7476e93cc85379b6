// Progressive enhancement only: the pages work without it. Copy buttons
// appear when the clipboard can be written.
document.addEventListener("DOMContentLoaded", () => {
  if (!navigator.clipboard) return;
  for (const b of document.querySelectorAll("button.copy[data-copy]")) {
    b.hidden = false;
    b.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(b.dataset.copy);
        b.textContent = "Copied";
      } catch {
        b.textContent = "Select and copy";
      }
      setTimeout(() => { b.textContent = "Copy"; }, 1500);
    });
  }
});

// The audit page follows new events: every two seconds it asks the
// console for the rows after the newest it shows (same filters, rendered
// by the server) and puts them on top.
document.addEventListener("DOMContentLoaded", () => {
  const follow = document.getElementById("follow");
  const table = document.getElementById("events");
  if (!follow || !table || !window.fetch) return;
  follow.hidden = false;
  const body = table.tBodies[0];
  let after = Number(follow.dataset.after || "0");
  let busy = false;
  // One batch (oldest first on the server, newest first in the answer);
  // true when more are waiting.
  const fetchBatch = async () => {
    const r = await fetch(`/console/audit/rows?${follow.dataset.filter}after=${after}`, { credentials: "same-origin" });
    if (!r.ok) throw new Error(String(r.status));
    const t = document.createElement("template");
    t.innerHTML = await r.text();
    const rows = Array.from(t.content.querySelectorAll("tr[data-seq]"));
    for (const row of rows.reverse()) {
      row.classList.add("new");
      body.insertBefore(row, body.firstChild);
      after = Math.max(after, Number(row.dataset.seq));
    }
    return { n: rows.length, more: r.headers.get("x-infra-more") === "true" };
  };
  setInterval(async () => {
    if (busy || document.hidden) return;
    busy = true;
    try {
      let total = 0;
      for (;;) {
        const { n, more } = await fetchBatch();
        total += n;
        if (!more || n === 0) break;
      }
      if (total > 0) {
        table.hidden = false;
        follow.textContent = `Following new events: ${total} new just now.`;
      }
    } catch {
      follow.textContent = "Stopped following: the server did not answer. Reload the page.";
    } finally {
      busy = false;
    }
  }, 2000);
});

// The recording player: a small terminal (text only: cursor movement,
// erasing, scrolling; colours are not drawn) fed the recording's output
// up to the chosen moment. Seek replays from the start; a running session
// is followed by asking for what arrived since, every second.
class Term {
  constructor(w, h) {
    this.w = w; this.h = h;
    this.reset();
  }
  blank() { return Array(this.w).fill(" "); }
  reset() {
    this.rows = Array.from({ length: this.h }, () => this.blank());
    this.x = 0; this.y = 0; this.state = 0; this.params = ""; this.saved = [0, 0];
  }
  resize(w, h) {
    if (!(w > 0 && h > 0)) return;
    // A recording says what size it likes; the page keeps it sane.
    w = Math.min(w, 500); h = Math.min(h, 200);
    this.rows = this.rows.slice(-h).map((r) => r.slice(0, w).concat(Array(Math.max(0, w - r.length)).fill(" ")));
    while (this.rows.length < h) this.rows.push(Array(w).fill(" "));
    this.w = w; this.h = h;
    this.x = Math.min(this.x, w - 1); this.y = Math.min(this.y, h - 1);
  }
  write(s) { for (const ch of s) this.put(ch); }
  lf() {
    if (this.y === this.h - 1) { this.rows.shift(); this.rows.push(this.blank()); } else this.y++;
  }
  put(ch) {
    switch (this.state) {
      case 0:
        if (ch === "\x1b") { this.state = 1; return; }
        if (ch === "\r") { this.x = 0; return; }
        if (ch === "\n" || ch === "\v" || ch === "\f") { this.lf(); return; }
        if (ch === "\b") { if (this.x > 0) this.x--; return; }
        if (ch === "\t") { this.x = Math.min(this.w - 1, (this.x + 8) & ~7); return; }
        if (ch < " " || ch === "\x7f") return;
        if (this.x >= this.w) { this.x = 0; this.lf(); }
        this.rows[this.y][this.x++] = ch;
        return;
      case 1:
        this.state = 0;
        if (ch === "[") { this.state = 2; this.params = ""; }
        else if (ch === "]" || ch === "P" || ch === "_" || ch === "^") this.state = 3;
        else if ("()*+#%".includes(ch)) this.state = 4;
        else if (ch === "7") this.saved = [this.x, this.y];
        else if (ch === "8") [this.x, this.y] = this.saved;
        else if (ch === "D") this.lf();
        else if (ch === "E") { this.x = 0; this.lf(); }
        else if (ch === "M") {
          if (this.y === 0) { this.rows.pop(); this.rows.unshift(this.blank()); } else this.y--;
        } else if (ch === "c") this.reset();
        return;
      case 2:
        if (ch >= "@" && ch <= "~") { this.state = 0; this.csi(ch); } else if (this.params.length < 64) this.params += ch;
        return;
      case 3: // a string (OSC, DCS): to BEL or ESC \
        if (ch === "\x07") this.state = 0; else if (ch === "\x1b") this.state = 4;
        return;
      default:
        this.state = 0;
    }
  }
  csi(f) {
    const priv = /^[?>=]/.test(this.params);
    const p = this.params.replace(/^[?>=]/, "").split(";").map((n) => parseInt(n, 10));
    // Counts past the screen do no more than the screen: a recording cannot
    // make the page loop for ever.
    const n = (i) => Math.min(p[i] > 0 ? p[i] : 1, Math.max(this.w, this.h));
    const row = this.rows[this.y];
    const fill = (r, a, b) => { for (let i = Math.max(0, a); i < Math.min(this.w, b); i++) r[i] = " "; };
    switch (f) {
      case "A": this.y = Math.max(0, this.y - n(0)); break;
      case "B": case "e": this.y = Math.min(this.h - 1, this.y + n(0)); break;
      case "C": case "a": this.x = Math.min(this.w - 1, this.x + n(0)); break;
      case "D": this.x = Math.max(0, this.x - n(0)); break;
      case "E": this.x = 0; this.y = Math.min(this.h - 1, this.y + n(0)); break;
      case "F": this.x = 0; this.y = Math.max(0, this.y - n(0)); break;
      case "G": case "`": this.x = Math.min(this.w - 1, n(0) - 1); break;
      case "d": this.y = Math.min(this.h - 1, n(0) - 1); break;
      case "H": case "f": this.y = Math.min(this.h - 1, n(0) - 1); this.x = Math.min(this.w - 1, n(1) - 1); break;
      case "J": {
        const m = p[0] || 0;
        if (m === 0) { fill(row, this.x, this.w); for (let y = this.y + 1; y < this.h; y++) this.rows[y] = this.blank(); }
        else if (m === 1) { fill(row, 0, this.x + 1); for (let y = 0; y < this.y; y++) this.rows[y] = this.blank(); }
        else this.rows = this.rows.map(() => this.blank());
        break;
      }
      case "K": {
        const m = p[0] || 0;
        if (m === 0) fill(row, this.x, this.w); else if (m === 1) fill(row, 0, this.x + 1); else fill(row, 0, this.w);
        break;
      }
      case "X": fill(row, this.x, this.x + n(0)); break;
      case "P": row.splice(this.x, n(0)); while (row.length < this.w) row.push(" "); break;
      case "@": for (let i = 0; i < n(0); i++) row.splice(this.x, 0, " "); row.length = this.w; break;
      case "L": for (let i = 0; i < n(0); i++) { this.rows.splice(this.y, 0, this.blank()); this.rows.pop(); } break;
      case "M": for (let i = 0; i < n(0); i++) { this.rows.splice(this.y, 1); this.rows.push(this.blank()); } break;
      case "S": for (let i = 0; i < n(0); i++) { this.rows.shift(); this.rows.push(this.blank()); } break;
      case "s": this.saved = [this.x, this.y]; break;
      case "u": [this.x, this.y] = this.saved; break;
      case "h": case "l":
        // The alternate screen (full-screen programs) starts and ends clean.
        if (priv && [47, 1047, 1049].includes(p[0])) this.rows = this.rows.map(() => this.blank());
        break;
      default: // colours and modes: not drawn
    }
  }
  text() { return this.rows.map((r) => r.join("").replace(/\s+$/, "")).join("\n"); }
}

document.addEventListener("DOMContentLoaded", () => {
  const player = document.getElementById("player");
  if (!player || !window.fetch || !window.TextEncoder) return;
  const screen = document.getElementById("screen");
  const play = document.getElementById("play");
  const seek = document.getElementById("seek");
  const speed = document.getElementById("speed");
  const clock = document.getElementById("clock");
  const status = document.getElementById("player-status");
  const src = player.dataset.src;
  let live = player.dataset.live === "true";
  let header = null, events = [], size = 0, watch = "", pending = "";
  let term = null, applied = 0, pos = 0, playing = false, last = 0;
  const duration = () => (events.length ? events[events.length - 1][0] : 0);
  const mmss = (t) => `${Math.floor(t / 60)}:${String(Math.floor(t % 60)).padStart(2, "0")}`;
  const show = () => {
    screen.textContent = term ? term.text() : "";
    seek.max = String(duration());
    seek.value = String(pos);
    clock.textContent = `${mmss(pos)} / ${mmss(duration())}${live ? " (running)" : ""}`;
  };
  // Lines of asciicast text; a line cut at the end waits for the rest.
  const take = (text) => {
    const lines = (pending + text).split("\n");
    pending = lines.pop();
    for (const line of lines) {
      if (!line.trim()) continue;
      let v;
      try { v = JSON.parse(line); } catch { continue; }
      if (!header) {
        header = v;
        header.width = Math.min(Number(v.width) || 80, 500);
        header.height = Math.min(Number(v.height) || 24, 200);
        term = new Term(header.width, header.height);
        continue;
      }
      if (Array.isArray(v) && (v[1] === "o" || v[1] === "r") && typeof v[2] === "string") events.push(v);
    }
  };
  const fetchMore = async () => {
    const url = size ? `${src}?from=${size}&watch=${encodeURIComponent(watch)}` : src;
    const r = await fetch(url, { credentials: "same-origin" });
    if (!r.ok) throw new Error(`the server answered ${r.status}`);
    const text = await r.text();
    size += new TextEncoder().encode(text).length;
    watch = r.headers.get("x-infra-watch") || watch;
    live = r.headers.get("x-infra-live") === "true";
    take(text);
  };
  // The screen at time t: forward from where it is, or again from the start.
  const render = (t) => {
    if (!term) return;
    if (t < pos || applied === 0) { term = new Term(header.width || 80, header.height || 24); applied = 0; }
    while (applied < events.length && events[applied][0] <= t) {
      const [, code, data] = events[applied++];
      if (code === "o") term.write(data);
      else { const [w, h] = data.split("x").map(Number); term.resize(w, h); }
    }
    pos = t;
    show();
  };
  const tick = (now) => {
    if (!playing) return;
    const t = pos + ((now - last) / 1000) * Number(speed.value || "1");
    last = now;
    if (t >= duration() && !live) { render(duration()); playing = false; play.textContent = "Play"; return; }
    render(Math.min(t, duration()));
    requestAnimationFrame(tick);
  };
  play.addEventListener("click", () => {
    playing = !playing;
    play.textContent = playing ? "Pause" : "Play";
    if (playing) {
      if (pos >= duration() && !live) { applied = 0; pos = 0; }
      last = performance.now();
      requestAnimationFrame(tick);
    }
  });
  seek.addEventListener("input", () => render(Number(seek.value)));
  (async () => {
    try {
      await fetchMore();
      status.textContent = live ? "A running session: following it." : "";
      // A running session is shown as it is now, and followed.
      render(live ? duration() : 0);
      if (live) { playing = true; play.textContent = "Pause"; last = performance.now(); requestAnimationFrame(tick); }
      while (live) {
        await new Promise((r) => setTimeout(r, 1000));
        await fetchMore();
        show();
      }
      status.textContent = "";
      show();
    } catch (e) {
      status.textContent = `The recording could not be loaded: ${e.message}. Reload the page.`;
    }
  })();
});
