"""jrsearch's library: the joint model, vectors, the metadata store, search and metrics.

Imports neither `indexer` nor `cli`; raises `JrsearchError`s, never prints or exits.
"""
