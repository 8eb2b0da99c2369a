import pytest
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


def test_video_tower_from_image_tower_matches_image_tower_per_frame():
    from modeling_videollava.configuration_videollava import LanguageBindVisionConfig
    from modeling_videollava.modeling_languagebind import LanguageBindVisionModel
    from training.align import video_tower_from_image_tower

    torch.manual_seed(0)
    cfg = LanguageBindVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
        add_time_attn=False,
        num_frames=1,
    )
    image = LanguageBindVisionModel(cfg).eval()
    video = video_tower_from_image_tower(image, num_frames=4).eval()
    clip = torch.randn(2, 4, 3, 16, 16)
    with torch.no_grad():
        per_frame = image(clip.flatten(0, 1)).last_hidden_state
        joint = video(clip).last_hidden_state
    torch.testing.assert_close(joint, per_frame)
    assert any(p.abs().sum() > 0 for n, p in video.named_parameters() if "temporal_attn.q_proj" in n)


def test_caption_recall_counts_an_identical_twin_as_a_hit_and_chance_follows_the_same_rule():
    from training.align import caption_chance, caption_recall_at_1

    captions = ["a red square.", "a red square.", "a blue circle."]  # items 0 and 1 share a caption
    items = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    queries = torch.tensor([[0.8, 0.6], [0.6, 0.8]])  # "a red square." is nearest to item 1, its twin
    assert caption_recall_at_1(queries, items, ["a red square.", "a blue circle."], captions) == 0.5
    assert caption_recall_at_1(items, queries, captions, ["a red square.", "a blue circle."]) == 1.0
    assert caption_chance(["a red square.", "a blue circle."], captions) == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert caption_chance(captions, ["a red square.", "a blue circle."]) == pytest.approx(0.5)
