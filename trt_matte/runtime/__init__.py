"""Streaming pipelines: readers, writers and the batch loop that overlaps them."""
