"""Reliability tests: each injects one fault for real and checks what survives it."""
