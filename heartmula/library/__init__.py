"""What the studio keeps for a musician: songs and sidecars, History, presets, live stats."""
