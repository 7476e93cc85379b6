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
