"""Page-wide CSS and the keyboard script (passed to gr.Blocks by blocks.py).

- Phone (narrow screens): a one-line header, and the Generate tab's Run/Stop row pinned to the
  bottom of the screen, so Generate is reachable without scrolling past the lyrics.
- History: the picked song's column (player first) is sticky beside the list on a wide screen,
  and comes above the list on a phone.
- Keyboard: Ctrl/Cmd+Enter in the Generate tab's lyrics or tags presses Generate; Esc presses
  the Stop button of whichever job is running (an enabled, visible Stop), and nothing else.
"""

CSS = """
/* History: the picked song's player column stays in view beside a long list */
#hist-side { position: sticky; top: 8px; align-self: flex-start; }
@media (max-width: 640px) {
  #hist-side { position: static; order: -1; }  /* stacked: the player above the list */
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
