"""Contrastive (CLIP-style) alignment primitives: symmetric InfoNCE and retrieval R@1.

Only the loss and the retrieval metric exist so far; the image/video alignment stages (issue 14) are not built yet.
"""

import torch
import torch.nn.functional as F


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
