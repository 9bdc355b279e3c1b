"""Page-wide CSS and the keyboard script (passed to gr.Blocks by blocks.py).

- Phone (narrow screens): a one-line header, and the Generate tab's Run/Stop row pinned to the
  bottom of the screen, so Generate is reachable without scrolling past the lyrics.
- History: the picked song's column (player first) is sticky beside the list on a wide screen;
  on a phone it follows a list of three columns (favourite, title, tags).
- Keyboard: Ctrl/Cmd+Enter in the Generate tab's lyrics or tags presses Generate; Esc presses
  the Stop button of whichever job is running (an enabled, visible Stop), and nothing else.
- Sliders: a number typed into a slider's box stays as typed when the box loses focus. Gradio's
  Slider (6.x, its blur handler) moves it into the slider's range there, so -5 s became a
  0.08 s song and 100 takes became 8 with nothing said; the run now sends what was typed and
  the option's own check refuses it by name (heartmula/options.py). The blur is stopped on its
  way down to the box (capture phase at the window), before Gradio's listener sees it.
"""

CSS = """
/* History: the picked song's player column stays in view beside a long list */
#hist-side { position: sticky; top: 8px; align-self: flex-start; }
@media (max-width: 640px) {
  #hist-side { position: static; }
  /* a phone shows the list as ★, title and tags (the picked song's panel shows the rest) */
  #hist-table th:nth-child(n+4), #hist-table td:nth-child(n+4), #hist-table .body-cell:nth-child(n+4) { display: none; }
  #hist-table th:nth-child(1), #hist-table .body-cell:nth-child(1) {
    width: 10% !important; min-width: 10% !important; max-width: 10% !important; flex: 0 0 10% !important; }
  #hist-table th:nth-child(2), #hist-table .body-cell:nth-child(2) {
    width: 55% !important; min-width: 55% !important; max-width: 55% !important; flex: 0 0 55% !important; }
  #hist-table th:nth-child(3), #hist-table .body-cell:nth-child(3) {
    width: 35% !important; min-width: 35% !important; max-width: 35% !important; flex: 0 0 35% !important; }
  #studio-header h1 { font-size: 1.25rem; margin: 0 0 .25rem 0; }
  #studio-header p:not(:has(details)) { display: none; }  /* the model line: Settings shows it */
  #studio-header details { font-size: .85rem; }
  #gen-actions { position: fixed; left: 0; right: 0; bottom: 0; z-index: 50; margin: 0; padding: 8px;
                 background: var(--background-fill-primary); box-shadow: 0 -2px 8px rgba(0, 0, 0, .15); }
  .gradio-container { padding-bottom: 72px !important; }
}
"""

HEAD = """
<script>
window.addEventListener("blur", (e) => {
  const t = e.target;
  if (t instanceof HTMLInputElement && t.type === "number" && t.matches("[data-testid=number-input]")) {
    e.stopPropagation();
  }
}, true);
document.addEventListener("keydown", (e) => {
  const target = e.target instanceof Element ? e.target : null;
  const usable = (b) => b && !b.disabled && b.offsetParent !== null;
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && target && target.closest("#gen-lyrics, #gen-tags")) {
    const run = document.querySelector("#gen-generate");
    if (usable(run)) { e.preventDefault(); run.click(); }
  } else if (e.key === "Escape") {
    const stop = [...document.querySelectorAll("#gen-stop, #tr-stop, #cmp-stop")].find(usable);
    if (stop) { e.preventDefault(); stop.click(); }
  }
});
</script>
"""
