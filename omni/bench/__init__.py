"""Benchmarks that ship with the library, so that a machine holding only the repository and its venv runs them."""
