"""Cross-modal retrieval metrics: Recall@K, median and mean rank, and the rank of every query.

Vocabulary: a *query* is scored against every item of a *gallery*; an item is *relevant* to a
query when the two carry the same label. Image-to-text: queries are images (label: their own
index), the gallery is captions (label: the index of the image each describes), so an image has
several relevant captions. Text-to-image: queries are captions, the gallery is images, one
relevant image per caption.

Rank rule (the one every function here uses):

    rank(query) = 1 + number of NON-relevant gallery items scoring >= the best relevant item

- An image's rank is the best rank of any of its ground-truth captions (the first relevant item).
- Ties are broken pessimistically: a non-relevant item with exactly the same score as the best
  relevant one counts as ranked ahead of it. A model that scores everything equal therefore gets
  the worst rank, never a lucky one. Ties among relevant items do not matter (the best one wins).
- Ranks are 1-based: rank 1 means the first result is right.

Scores are inner products, i.e. cosine similarities for the unit vectors encoders return.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
CHUNK_ELEMENTS = 8_000_000  # scores held at once (32 MB of float32): bounds memory, keeps BLAS busy


@dataclass(frozen=True)
class RankSummary:
    """What a table row shows for one direction: Recall@K in percent, median and mean rank."""

    recall: dict[int, float]  # K -> % of queries whose first relevant item is within the top K
    median_rank: float
    mean_rank: float
    queries: int

    def to_json(self) -> dict:
        out = {f"R@{k}": round(v, 4) for k, v in self.recall.items()}
        out.update({"median_rank": self.median_rank, "mean_rank": round(self.mean_rank, 4), "queries": self.queries})
        return out


@dataclass(frozen=True)
class CrossModalRanks:
    """Both directions over one set of images and their captions, with every query's rank."""

    image_to_text: np.ndarray  # (n_images,) rank of each image's best ground-truth caption
    text_to_image: np.ndarray  # (n_captions,) rank of each caption's image

    def summaries(self, ks: tuple[int, ...] = DEFAULT_KS) -> tuple[RankSummary, RankSummary]:
        return summarize(self.image_to_text, ks), summarize(self.text_to_image, ks)


def first_relevant_ranks(queries: np.ndarray, gallery: np.ndarray, query_labels: np.ndarray,
                         gallery_labels: np.ndarray, chunk_elements: int = CHUNK_ELEMENTS) -> np.ndarray:
    """1-based rank of the best-scoring relevant gallery item for every query (ties pessimistic).

    Exact: scores every query against the whole gallery with a matrix product, a block of
    queries at a time so that memory stays bounded (5,000 x 25,000 takes seconds on a CPU).
    Raises `ValueError` when a query has no relevant item in the gallery.
    """
    queries = np.asarray(queries, dtype=np.float32)
    gallery = np.asarray(gallery, dtype=np.float32)
    query_labels = np.asarray(query_labels)
    gallery_labels = np.asarray(gallery_labels)
    if len(queries) != len(query_labels) or len(gallery) != len(gallery_labels):
        raise ValueError("every query and every gallery item needs exactly one label")
    orphans = ~np.isin(query_labels, gallery_labels)
    if orphans.any():
        raise ValueError(f"{int(orphans.sum())} queries have no relevant item in the gallery "
                         f"(first: query {int(np.flatnonzero(orphans)[0])})")
    ranks = np.empty(len(queries), dtype=np.int64)
    step = max(1, chunk_elements // max(1, len(gallery)))
    for start in range(0, len(queries), step):
        stop = start + step
        scores = queries[start:stop] @ gallery.T
        relevant = query_labels[start:stop, None] == gallery_labels[None, :]
        best = np.where(relevant, scores, -np.inf).max(axis=1, keepdims=True)
        ranks[start:stop] = 1 + ((scores >= best) & ~relevant).sum(axis=1)
    return ranks


def ranks_from_hits(hit_ids: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray) -> np.ndarray:
    """Ranks from a search engine's ranked result lists (row i: gallery indices for query i).

    The rank is the position of the first relevant hit, in the order the engine returned them
    (so ties follow the engine, not the pessimistic rule). Id -1 is an empty slot. A query whose
    relevant items were not returned at all (an approximate index can miss them) gets rank
    len(gallery_labels) + 1: worse than any real position.
    """
    hit_ids = np.asarray(hit_ids)
    gallery_labels = np.asarray(gallery_labels)
    hit_labels = gallery_labels[np.clip(hit_ids, 0, None)]
    relevant = (hit_ids >= 0) & (hit_labels == np.asarray(query_labels)[:, None])
    found = relevant.any(axis=1)
    return np.where(found, relevant.argmax(axis=1) + 1, len(gallery_labels) + 1).astype(np.int64)


def summarize(ranks: np.ndarray, ks: tuple[int, ...] = DEFAULT_KS) -> RankSummary:
    """Recall@K (percent), median and mean rank of 1-based ranks.

    A K beyond the gallery size is allowed: every rank is within it, so its recall is 100.
    The median rank is floored to a whole rank, as in the VSE++ evaluation code that produced the
    published COCO tables (`floor(median(0-based ranks)) + 1`); the mean rank is not rounded.
    """
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("no ranks to summarise")
    if (ranks < 1).any():
        raise ValueError("ranks are 1-based; got a rank below 1")
    return RankSummary(recall={k: float(100.0 * np.mean(ranks <= k)) for k in ks},
                       median_rank=float(np.floor(np.median(ranks))), mean_rank=float(ranks.mean()),
                       queries=int(ranks.size))


def mean_summary(summaries: list[RankSummary]) -> RankSummary:
    """Every field averaged over folds (how COCO 1K is reported: the mean of five 1K folds)."""
    if not summaries:
        raise ValueError("no folds to average")
    ks = tuple(summaries[0].recall)
    return RankSummary(recall={k: float(np.mean([s.recall[k] for s in summaries])) for k in ks},
                       median_rank=float(np.mean([s.median_rank for s in summaries])),
                       mean_rank=float(np.mean([s.mean_rank for s in summaries])),
                       queries=sum(s.queries for s in summaries))


def cross_modal_ranks(image_vectors: np.ndarray, text_vectors: np.ndarray,
                      caption_image: np.ndarray) -> CrossModalRanks:
    """Exact ranks both ways; `caption_image[j]` is the row in `image_vectors` caption j describes."""
    caption_image = np.asarray(caption_image)
    images = np.arange(len(image_vectors))
    return CrossModalRanks(
        image_to_text=first_relevant_ranks(image_vectors, text_vectors, images, caption_image),
        text_to_image=first_relevant_ranks(text_vectors, image_vectors, caption_image, images))


@dataclass(frozen=True)
class Fold:
    number: int  # 0-based: fold f holds split positions [f * fold_size, (f + 1) * fold_size)
    images: np.ndarray  # indices into the image rows
    captions: np.ndarray  # indices into the caption rows: the captions of those images


def split_folds(image_positions: np.ndarray, caption_image: np.ndarray, fold_size: int) -> list[Fold]:
    """Split images (and the captions describing them) into folds of consecutive split positions.

    `image_positions[i]` is image i's place in the full split (0..4999 for Karpathy 5K), so fold f
    holds positions [f * fold_size, (f + 1) * fold_size) even when some images are absent. Returns
    the non-empty folds, in order. COCO 1K is
    `fold_size=1000` over the 5K split: five folds of 1,000 images and their 5,000 captions.
    """
    if fold_size < 1:
        raise ValueError("fold_size must be at least 1")
    folds = np.asarray(image_positions) // fold_size
    caption_fold = folds[np.asarray(caption_image)]
    return [Fold(int(f), np.flatnonzero(folds == f), np.flatnonzero(caption_fold == f)) for f in np.unique(folds)]
