"""open_clip's towers for export, with the last transformer block run for the pooled token alone.

A CLIP tower keeps one token of its last block's output: a ViT the class token, the text
transformer the end-of-text token. open_clip still runs that block for every token. Its keys and
values need every token, but its query, attention output and MLP need only the kept one, so the
forward passes here compute those for that token alone. They are the same function as
`encode_image` / `encode_text` (the export check holds them to torch's own, cosine >= 0.9999), with
less work: for ViT-B-32 at 256 px, 64 of 65 tokens skip most of the twelfth block (README "Speed").

A tower of another shape (attention pooling, average pooling, a custom block) exports whole.
Needs torch; used only by `onnx.export_model`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.transformer import ResidualAttentionBlock, Transformer, VisionTransformer


def _plain_stack(transformer: object) -> bool:
    """A batch-first stack of plain residual attention blocks (no cross-attention)."""
    return (isinstance(transformer, Transformer) and transformer.batch_first
            and all(type(b) is ResidualAttentionBlock and not hasattr(b, "ln_1_kv") for b in transformer.resblocks))


def _last_block_for(block: ResidualAttentionBlock, x: torch.Tensor, pick: Callable[[torch.Tensor], torch.Tensor],
                    attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The kept token of `block(x)`: (n, 1, width). `pick` takes that token out of an (n, length,
    width) tensor as (n, 1, width); `attn_mask` is its row of the block's mask, (n, length), or None."""
    normed = block.ln_1(x)
    mask = None
    if attn_mask is not None:  # (n * heads, 1, length), batch-major as nn.MultiheadAttention reads it
        mask = attn_mask.to(x.dtype).repeat_interleave(block.attn.num_heads, dim=0).unsqueeze(1)
    kept = pick(x)
    kept = kept + block.ls_1(block.attn(pick(normed), normed, normed, need_weights=False, attn_mask=mask)[0])
    return kept + block.ls_2(block.mlp(block.ln_2(kept)))


def pooled_image_forward(visual: object) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """`visual(images)` with the last block for the class token only, or None where `visual` is not
    a class-token ViT of plain blocks."""
    if not (isinstance(visual, VisionTransformer) and visual.attn_pool is None and visual.pool_type == "tok"
            and not visual.output_tokens and _plain_stack(visual.transformer)):
        return None

    def forward(images: torch.Tensor) -> torch.Tensor:
        x = visual._embeds(images)
        *blocks, last = visual.transformer.resblocks
        for block in blocks:
            x = block(x)
        # ln_post normalises each token alone, so it may follow the pooling (`final_ln_after_pool`) or not
        pooled = visual.ln_post(_last_block_for(last, x, lambda t: t[:, :1])[:, 0])
        return pooled @ visual.proj if visual.proj is not None else pooled

    return forward


def pooled_text_forward(model: object) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """`model.encode_text(tokens)` with the last block for the end-of-text token only, or None where
    `model` is not a CLIP whose text tower pools the highest token id (CLIP's end of text)."""
    if not (isinstance(model, CLIP) and model.text_pool_type == "argmax" and _plain_stack(model.transformer)):
        return None

    def forward(tokens: torch.Tensor) -> torch.Tensor:
        cast = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast) + model.positional_embedding.to(cast)
        *blocks, last = model.transformer.resblocks
        for block in blocks:
            x = block(x, attn_mask=model.attn_mask)
        end = tokens.argmax(dim=-1)
        rows = torch.arange(x.shape[0])
        mask = model.attn_mask[end] if model.attn_mask is not None else None
        pooled = model.ln_final(_last_block_for(last, x, lambda t: t[rows, end].unsqueeze(1), mask)[:, 0])
        if model.text_projection is None:
            return pooled
        if isinstance(model.text_projection, torch.nn.Linear):
            return model.text_projection(pooled)
        return pooled @ model.text_projection

    return forward


def image_tower(model: object) -> Callable[[torch.Tensor], torch.Tensor]:
    """The image tower to export: normalised vectors, pruned where `pooled_image_forward` can."""
    forward = pooled_image_forward(model.visual) or model.encode_image  # type: ignore[attr-defined]
    return lambda images: F.normalize(forward(images), dim=-1)


def text_tower(model: object) -> Callable[[torch.Tensor], torch.Tensor]:
    """The text tower to export: normalised vectors, pruned where `pooled_text_forward` can."""
    forward = pooled_text_forward(model) or model.encode_text  # type: ignore[attr-defined]
    return lambda tokens: F.normalize(forward(tokens), dim=-1)
