"""Vocoders that turn log-mel spectrograms or discrete speech units back into waveforms, in pure torch."""
