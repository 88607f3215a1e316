"""Format readers, writers and converters (GGUF, safetensors)."""
