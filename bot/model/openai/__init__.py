"""The scale-out backend: an OpenAI-compatible server generates."""
