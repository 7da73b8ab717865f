"""Benchmarks: retrieval quality (COCO 1K/5K, Flickr30K 1K) through the code users run."""
