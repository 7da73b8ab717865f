"""Retrieval metrics: hand-worked cases, the pessimistic tie rule, folds, and a brute-force check."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jrsearch.retrieval.metrics import (
    RankSummary,
    cross_modal_ranks,
    first_relevant_ranks,
    mean_summary,
    ranks_from_hits,
    split_folds,
    summarize,
)

# Three images; captions 0,1 describe image 0, captions 2,3 image 1, caption 4 image 2.
CAPTION_IMAGE = np.array([0, 0, 1, 1, 2])
# SCORES[i, j] = similarity of image i and caption j. Exact in float32, so the ties are real ties.
SCORES = np.array([
    [0.2, 0.9, 0.5, 0.1, 0.0],  # image 0: its best caption (1) is first -> rank 1
    [0.8, 0.1, 0.3, 0.6, 0.7],  # image 1: best own caption 3 (0.6) is behind captions 0 and 4 -> rank 3
    [0.4, 0.4, 0.4, 0.2, 0.4],  # image 2: caption 4 ties with captions 0, 1, 2 -> pessimistic rank 4
], dtype=np.float32)


def vectors_with_scores(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image vectors = identity rows, text vectors = score columns, so images @ texts.T == scores."""
    return np.eye(scores.shape[0], dtype=np.float32), np.ascontiguousarray(scores.T)


def test_hand_worked_both_directions():
    images, texts = vectors_with_scores(SCORES)
    ranks = cross_modal_ranks(images, texts, CAPTION_IMAGE)
    assert ranks.image_to_text.tolist() == [1, 3, 4]
    # caption 0: image 0 scores 0.2, behind 0.8 and 0.4 -> 3; caption 2: 0.3 behind 0.5, 0.4 -> 3;
    # caption 4: 0.4 behind image 1's 0.7 -> 2; captions 1 and 3 are first.
    assert ranks.text_to_image.tolist() == [3, 1, 3, 1, 2]

    i2t, t2i = ranks.summaries()
    assert i2t.recall == pytest.approx({1: 100 / 3, 5: 100.0, 10: 100.0})
    assert (i2t.median_rank, i2t.mean_rank, i2t.queries) == (3.0, pytest.approx(8 / 3), 3)
    assert t2i.recall == pytest.approx({1: 40.0, 5: 100.0, 10: 100.0})
    assert (t2i.median_rank, t2i.mean_rank, t2i.queries) == (2.0, 2.0, 5)


def test_ties_count_against_the_model():
    """A model that scores everything the same gets the worst possible rank, not a lucky one."""
    images, texts = np.zeros((4, 3), np.float32), np.zeros((8, 3), np.float32)
    caption_image = np.repeat(np.arange(4), 2)
    ranks = cross_modal_ranks(images, texts, caption_image)
    assert ranks.image_to_text.tolist() == [7] * 4  # 6 other captions tie, all counted ahead
    assert ranks.text_to_image.tolist() == [4] * 8  # 3 other images tie
    # Ties among an image's own captions cost nothing: only other items are counted.
    images, texts = vectors_with_scores(np.array([[0.5, 0.5, 0.1]], np.float32))
    assert first_relevant_ranks(images, texts, np.array([0]), np.array([0, 0, 1])).tolist() == [1]


def test_chunking_does_not_change_ranks():
    rng = np.random.default_rng(1)
    images, texts = rng.standard_normal((30, 8)), rng.standard_normal((150, 8))
    labels = np.repeat(np.arange(30), 5)
    whole = first_relevant_ranks(images, texts, np.arange(30), labels)
    assert np.array_equal(whole, first_relevant_ranks(images, texts, np.arange(30), labels, chunk_elements=1))
    assert np.array_equal(whole, first_relevant_ranks(images, texts, np.arange(30), labels, chunk_elements=700))


def test_k_beyond_the_collection_and_floored_median():
    summary = summarize(np.array([1, 2, 3, 2]), ks=(1, 2, 50))
    assert summary.recall == {1: 25.0, 2: 75.0, 50: 100.0}
    assert summary.median_rank == 2.0 and summary.mean_rank == 2.0
    assert summarize(np.array([1, 2])).median_rank == 1.0  # median 1.5, floored as in VSE++
    with pytest.raises(ValueError):
        summarize(np.array([0, 1]))
    with pytest.raises(ValueError):
        summarize(np.array([], dtype=int))


def test_query_without_a_relevant_item_is_an_error():
    with pytest.raises(ValueError, match="no relevant item"):
        first_relevant_ranks(np.ones((2, 3)), np.ones((2, 3)), np.array([0, 7]), np.array([0, 1]))


def test_ranks_from_hits_follow_the_engine_order_and_count_misses_as_last():
    gallery_labels = np.array([0, 0, 1, 2])
    hits = np.array([[2, 1, 0, 3],  # query label 0: first relevant at position 2
                     [3, -1, -1, -1],  # query label 1: never returned -> 4 + 1
                     [3, 2, -1, -1],  # query label 2: first
                     [3, -1, -1, -1]])  # query label 0: an empty slot is not gallery item 0
    assert ranks_from_hits(hits, np.array([0, 1, 2, 0]), gallery_labels).tolist() == [2, 5, 1, 5]


def test_coco_1k_folds():
    """5,000 images with 5 captions each -> five folds of 1,000 consecutive images and 5,000 captions."""
    caption_image = np.repeat(np.arange(5000), 5)
    folds = split_folds(np.arange(5000), caption_image, 1000)
    assert [f.number for f in folds] == [0, 1, 2, 3, 4]
    for f, fold in enumerate(folds):
        assert np.array_equal(fold.images, np.arange(1000 * f, 1000 * (f + 1)))
        assert np.array_equal(fold.captions, np.arange(5000 * f, 5000 * (f + 1)))
    # Absent images leave their fold short, never shift others into it.
    positions = np.array([3, 1500, 1999, 4999])
    folds = split_folds(positions, np.array([0, 1, 2, 3, 3]), 1000)
    assert [(f.number, f.images.tolist(), f.captions.tolist()) for f in folds] == \
        [(0, [0], [0]), (1, [1, 2], [1, 2]), (4, [3], [3, 4])]


def test_fold_mean_averages_every_field():
    a = RankSummary({1: 50.0, 5: 100.0}, median_rank=1.0, mean_rank=2.0, queries=10)
    b = RankSummary({1: 60.0, 5: 90.0}, median_rank=2.0, mean_rank=3.0, queries=10)
    mean = mean_summary([a, b])
    assert mean.recall == {1: 55.0, 5: 95.0}
    assert (mean.median_rank, mean.mean_rank, mean.queries) == (1.5, 2.5, 20)


def brute_force_rank(scores: np.ndarray, relevant: np.ndarray) -> int:
    """Sort the gallery by score, non-relevant before relevant on ties; 1 + the first relevant position."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], bool(relevant[j])))
    return 1 + next(position for position, j in enumerate(order) if relevant[j])


@settings(max_examples=150, deadline=None, database=None)  # no .hypothesis/ folder in the tree
@given(st.data())
def test_matches_brute_force_on_random_embeddings(data):
    n_images = data.draw(st.integers(1, 8))
    per_image = data.draw(st.lists(st.integers(1, 4), min_size=n_images, max_size=n_images))
    dim = data.draw(st.integers(1, 4))
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Small integers: exact float arithmetic and plenty of ties.
    images = rng.integers(-2, 3, size=(n_images, dim)).astype(np.float32)
    caption_image = np.repeat(np.arange(n_images), per_image)
    texts = rng.integers(-2, 3, size=(len(caption_image), dim)).astype(np.float32)

    ranks = cross_modal_ranks(images, texts, caption_image)
    scores = images.astype(np.int64) @ texts.astype(np.int64).T
    assert ranks.image_to_text.tolist() == [brute_force_rank(scores[i], caption_image == i) for i in range(n_images)]
    assert ranks.text_to_image.tolist() == [brute_force_rank(scores[:, j], np.arange(n_images) == caption_image[j])
                                            for j in range(len(caption_image))]
