import torch

from training.align import recall_at_1, symmetric_info_nce


def test_contrastive_loss_falls_and_retrieval_beats_chance():
    torch.manual_seed(0)
    n, d = 16, 8
    text = torch.randn(n, 12)
    media = torch.randn(n, 12)
    text_proj = torch.nn.Linear(12, d)
    media_proj = torch.nn.Linear(12, d)
    scale = torch.nn.Parameter(torch.tensor(2.0))
    params = [*text_proj.parameters(), *media_proj.parameters(), scale]
    opt = torch.optim.Adam(params, lr=0.05)
    first = symmetric_info_nce(text_proj(text), media_proj(media), scale).item()
    for _ in range(100):
        loss = symmetric_info_nce(text_proj(text), media_proj(media), scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 2
    assert recall_at_1(text_proj(text), media_proj(media)) > 4 / n
