"""jrsearch's library: the joint model, vectors, the metadata store, search and metrics.

Imports neither `indexer` nor `cli`; raises `JrsearchError`s, never prints or exits.
"""

if __name__ != "jrsearch.retrieval":  # one import name: the checkout's folder is not a package of its own
    raise ImportError(f"import jrsearch.retrieval, not {__name__} (install the checkout: pip install -e .)")
