"""Converters that turn other weights into the formats omni loads: registry-installable ones (openai-whisper,
Hugging Face) and LLaMA-Omni's released checkpoint (`llama_omni`)."""
