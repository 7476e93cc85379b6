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
