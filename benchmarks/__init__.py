"""Benchmarks: retrieval quality (COCO 1K/5K, Flickr30K 1K) through the code users run."""

if __name__ != "jrsearch.benchmarks":  # one import name: the checkout's folder is not a package of its own
    raise ImportError(f"import jrsearch.benchmarks, not {__name__} (install the checkout: pip install -e .)")
