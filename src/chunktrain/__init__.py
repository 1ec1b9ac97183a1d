"""Chunked PyTorch training as a cached DVC pipeline."""
