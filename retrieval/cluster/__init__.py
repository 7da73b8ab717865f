"""Embedding datasets and indexes made by `jrsearch cluster` (Ray), read without Ray.

- `dataset.py` the clip-retrieval layout: float16 `img_emb/img_emb_N.npy` shards and
  `metadata/metadata_N.parquet` rows in the same order; vector ids are global row numbers
  (autofaiss's convention), so autofaiss and clip-retrieval read the same data.
- `model.py` the one place that calls the joint model's encoder for cluster jobs.
- `index_dir.py` an INDEXDIR (merged on-disk IVF index, or N shard indexes) searched in process.
- `router.py` one Ray actor per shard and a router that fans a query out and merges the top-k.
"""
