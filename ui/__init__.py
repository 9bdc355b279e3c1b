"""HeartMuLa Studio's browser UI (Gradio 6). Layout in tabs/, behaviour in handlers/, events in wiring.py.

Nothing here imports torch or model code: the engine is reached only through names exported by
`heartmula/__init__.py`, on an `Engine` passed to `blocks.build_ui`.
"""
