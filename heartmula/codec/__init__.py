"""HeartCodec: frames of codes -> 48 kHz stereo audio. Never imports mula/."""
