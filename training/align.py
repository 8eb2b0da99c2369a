"""Contrastive (CLIP-style) alignment primitives: symmetric InfoNCE, retrieval R@1 and the image->video tower
initialisation. The two alignment stages that use them are `training.alignment`.

Retrieval with repeated captions (synthetic data: several media share one caption): `caption_recall_at_1` counts a
hit when the retrieved item's caption equals the query's, so a query is never scored wrong for retrieving an
identical twin of its own item; `caption_chance` is the R@1 of a random ranking under the same rule.
"""

import torch
import torch.nn.functional as F

from modeling_videollava.configuration_videollava import LanguageBindVisionConfig
from modeling_videollava.modeling_languagebind import LanguageBindVisionModel


def symmetric_info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP loss for paired embeddings `a`, `b` of shape (N, D): mean of a->b and b->a cross-entropy."""
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    logits = logit_scale.exp() * a @ b.t()  # (N, N), matches on the diagonal
    target = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


@torch.no_grad()
def recall_at_1(queries: torch.Tensor, items: torch.Tensor) -> float:
    """Fraction of queries (N, D) whose nearest item (N, D) by cosine similarity is their own pair."""
    sims = F.normalize(queries, dim=-1) @ F.normalize(items, dim=-1).t()  # (N, N)
    hits = sims.argmax(dim=-1) == torch.arange(queries.shape[0], device=queries.device)
    return hits.float().mean().item()


@torch.no_grad()
def caption_recall_at_1(
    queries: torch.Tensor, items: torch.Tensor, query_captions: list[str], item_captions: list[str]
) -> float:
    """Fraction of queries (Q, D) whose nearest item (I, D) by cosine similarity has the query's caption."""
    sims = F.normalize(queries, dim=-1) @ F.normalize(items, dim=-1).t()  # (Q, I)
    best = sims.argmax(dim=-1).tolist()
    return sum(item_captions[j] == caption for j, caption in zip(best, query_captions)) / len(query_captions)


def caption_chance(query_captions: list[str], item_captions: list[str]) -> float:
    """Expected `caption_recall_at_1` of a uniformly random pick: per query, the share of items with its caption."""
    return sum(item_captions.count(c) / len(item_captions) for c in query_captions) / len(query_captions)


def video_tower_from_image_tower(image_tower: LanguageBindVisionModel, num_frames: int) -> LanguageBindVisionModel:
    """A video tower with the image tower's weights plus LanguageBind's temporal sub-blocks, zero-initialised
    (temporal embedding and temporal attention output projection) so it starts equal to the image tower per frame."""
    config = LanguageBindVisionConfig(
        **{**image_tower.config.to_dict(), "add_time_attn": True, "num_frames": num_frames}
    )
    video = LanguageBindVisionModel(config)
    missing, unexpected = video.load_state_dict(image_tower.state_dict(), strict=False)
    if unexpected or any("temporal" not in name for name in missing):
        raise ValueError(f"image tower does not match the video tower: missing={missing}, unexpected={unexpected}")
    with torch.no_grad():
        for layer in video.encoder.layers:
            layer.temporal_embedding.zero_()
            layer.temporal_attn.out_proj.weight.zero_()
            layer.temporal_attn.out_proj.bias.zero_()
    return video
