"""Converters that turn registry-installable weights into the formats omni loads (openai-whisper, Hugging Face)."""
