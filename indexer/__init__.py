"""Turning files into vectors: walking, change detection, decoding, and the pipeline that keeps
the model busy. Imports `retrieval`, never `cli`."""

if __name__ != "jrsearch.indexer":  # one import name: the checkout's folder is not a package of its own
    raise ImportError(f"import jrsearch.indexer, not {__name__} (install the checkout: pip install -e .)")
