"""Transcription (Whisper through transformers), the CTranslate2 converter and the lyric check."""
