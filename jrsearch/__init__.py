"""jrsearch: cross-modal search over your photos, texts, videos and sounds.

The design's folders (`retrieval/`, `indexer/`, `cli/`, `benchmarks/`) install as subpackages of this
one name (`pyproject.toml`'s package-dir), so `jrsearch.retrieval` is the only way to import them.
"""
