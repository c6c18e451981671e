"""The offline demo set: spoken instructions (espeak-ng) answered by the demo LLM itself."""
