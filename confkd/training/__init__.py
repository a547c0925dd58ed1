"""Batching, the resumable training loop, and batched inference."""
