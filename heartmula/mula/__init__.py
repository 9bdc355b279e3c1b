"""HeartMuLa, the language model: lyrics and tags -> frames of codes."""
