"""Evaluations: text parity of speech answers (stage 1)."""
