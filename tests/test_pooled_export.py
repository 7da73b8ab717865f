"""The exported towers run their last block for the pooled token alone (`pooled_export`); they must
be the same function as open_clip's own towers."""

import copy

import numpy as np
import pytest
import torch

from jrsearch.retrieval.encoders.pooled_export import (
    image_tower,
    pooled_image_forward,
    pooled_text_forward,
    text_tower,
)


@pytest.fixture(scope="module")
def model(tiny_encoder):
    return tiny_encoder.model.eval()


def test_the_image_tower_equals_open_clips_on_every_row(model):
    images = torch.from_numpy(np.random.default_rng(1).standard_normal((5, 3, 64, 64), dtype=np.float32))
    forward = pooled_image_forward(model.visual)
    assert forward is not None, "the tiny ViT is a class-token ViT and should be pruned"
    with torch.inference_mode():
        torch.testing.assert_close(forward(images), model.visual(images), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(image_tower(model)(images), model.encode_image(images, normalize=True),
                                   rtol=1e-5, atol=1e-5)


def test_the_text_tower_equals_open_clips_whatever_the_end_tokens_position(tiny_encoder, model):
    # empty, short, and long enough that the end token is the last of the context
    texts = ["", "a dog", "two people riding bicycles past a red building at night", "word " * 60]
    tokens = tiny_encoder.tokenizer(texts)
    ends = tokens.argmax(dim=-1)
    assert ends.min() == 1 and ends.max() == tokens.shape[1] - 1
    forward = pooled_text_forward(model)
    assert forward is not None
    with torch.inference_mode():
        torch.testing.assert_close(forward(tokens), model.encode_text(tokens), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(text_tower(model)(tokens), model.encode_text(tokens, normalize=True),
                                   rtol=1e-5, atol=1e-5)


def test_towers_pooled_another_way_export_whole(model):
    averaged = copy.deepcopy(model)
    averaged.visual.pool_type = "avg"
    assert pooled_image_forward(averaged.visual) is None
    last_token = copy.deepcopy(model)
    last_token.text_pool_type = "last"
    assert pooled_text_forward(last_token) is None
    images = torch.zeros(2, 3, 64, 64)
    with torch.inference_mode():  # and the whole tower is what gets exported
        torch.testing.assert_close(image_tower(averaged)(images), averaged.encode_image(images, normalize=True))
