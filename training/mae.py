"""Masked-autoencoder (MAE, He et al. 2021) pretraining of a LanguageBind image tower: the "separated" tower.

Video-LLaVA's united-vs-separated ablation (paper Fig. 5/6) swaps the LanguageBind image tower, aligned to the same
text encoder as the video tower, for an MAE tower of the same size, pretrained with an unrelated objective. This
module trains that MAE tower and saves it in the LanguageBind folder layout, so that it goes through
`videollava convert --from languagebind --image-tower <output>/` like any LanguageBind tower.

Design: MAE proper, not SimMIM. A random `mask_ratio` of the patches is dropped *before* the encoder, which sees
only CLS + the visible patches (16 patches at 75% -> 4 visible), exactly as in MAE. This needs no change to
`LanguageBindVisionModel`: we call its own `embeddings` (patch conv + CLS + positions), keep the visible tokens,
then its `pre_layrnorm`, `encoder.layers` and `post_layernorm`. A mask token (SimMIM) would put a token the VLM never
sees into every training sequence; dropping keeps train and VLM inputs alike (the VLM sees the same tokens, only
more of them). A light decoder (1 narrow LanguageBind block, MAE's asymmetric design) re-inserts a learned mask
token at the masked positions, adds its own positions and predicts the pixels of every patch; the loss is the MSE
on masked patches only, against per-patch normalised pixels (MAE's `norm_pix_loss`) of the processor's output.

Inputs are what the VLM sees: the package's `LanguageBindImageProcessor` at the tower's image size (as
`LanguageBindVideoLlavaProcessor.from_config` builds it). The output folder:

    config.json                   {"model_type": "LanguageBindImage", "vision_config": {...}}
    model.safetensors             the tower, `vision_model.*` keys only (what the converter reads)
    mae_decoder/model.safetensors the decoder (a subfolder: the converter reads every *.safetensors next to
                                  config.json and must not see it)
    mae_report.json               loss first/last, steps, seconds, number of images

Usage:
    from training.mae import MaeConfig, pretrain_mae
    pretrain_mae(paths, dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                             image_size=64, patch_size=16), Path("mae_tower"), MaeConfig(steps=3000))
"""

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from modeling_videollava.configuration_videollava import LanguageBindVisionConfig
from modeling_videollava.modeling_languagebind import LanguageBindEncoderLayer, LanguageBindVisionModel
from processing.image_processing_videollava import LanguageBindImageProcessor


logger = logging.getLogger(__name__)
DECODER_FOLDER = "mae_decoder"


@dataclass
class MaeConfig:
    """MAE pretraining settings.

    Attributes:
        steps: optimiser steps.
        batch_size: images per step (drawn as epochs of a seeded permutation).
        lr: peak AdamW learning rate (linear warm-up over the first 5% of steps, then cosine to 0).
        mask_ratio: fraction of patches hidden from the encoder; `int(N * (1 - mask_ratio))` stay visible.
        seed: seeds the initialisation, the batches and the masks.
        decoder_hidden_size: width of the decoder block (narrower than the tower, as in MAE).
        decoder_layers: decoder blocks.
        weight_decay: AdamW weight decay (MAE: 0.05).
        norm_pix_loss: targets are the patch pixels normalised per patch (MAE's best setting) instead of as is.
    """

    steps: int = 3000
    batch_size: int = 64
    lr: float = 1.5e-3
    mask_ratio: float = 0.75
    seed: int = 0
    decoder_hidden_size: int = 32
    decoder_layers: int = 1
    weight_decay: float = 0.05
    norm_pix_loss: bool = True


def image_processor_for(config: LanguageBindVisionConfig) -> LanguageBindImageProcessor:
    """The image processor the VLM uses for a tower of `config.image_size` (built as
    `LanguageBindVideoLlavaProcessor.from_config` builds it)."""
    return LanguageBindImageProcessor.for_image_size(config.image_size)


def load_pixels(image_paths: list[Path], config: LanguageBindVisionConfig, chunk: int = 256) -> torch.Tensor:
    """Every image through the VLM's image processor: `(N, 3, image_size, image_size)` float32."""
    if not image_paths:
        raise ValueError("pretrain_mae needs at least one image path, got none.")
    processor = image_processor_for(config)
    out = []
    for start in range(0, len(image_paths), chunk):
        images = []
        for path in image_paths[start : start + chunk]:
            try:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            except (OSError, ValueError) as err:
                raise ValueError(f"cannot read image {path}: {err}") from None
        out.append(processor(images=images, return_tensors="pt")["pixel_values"])
    return torch.cat(out)


def patchify(pixels: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, p*p*C), patches in the row-major order of the tower's patch embedding."""
    b, c, h, w = pixels.shape
    p = patch_size
    x = pixels.reshape(b, c, h // p, p, w // p, p)  # (B, C, h, p, w, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p, p, C)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def random_masking(
    batch: int, num_patches: int, mask_ratio: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """MAE's per-sample random masking.

    Returns:
        keep (`torch.LongTensor` `(B, K)`): indices of the visible patches, K = int(N * (1 - mask_ratio)), sorted.
        mask (`torch.BoolTensor` `(B, N)`): True where a patch is masked (hidden from the encoder, in the loss).
    """
    num_keep = int(num_patches * (1 - mask_ratio))
    if not 0 < num_keep < num_patches:
        raise ValueError(f"mask_ratio={mask_ratio} leaves {num_keep} of {num_patches} patches visible; need 1..N-1.")
    noise = torch.rand(batch, num_patches, generator=generator)
    keep = noise.argsort(dim=1)[:, :num_keep].sort(dim=1).values  # (B, K)
    mask = torch.ones(batch, num_patches, dtype=torch.bool)
    mask.scatter_(1, keep, False)
    return keep, mask


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked patches only: pred/target `(B, N, P)`, mask `(B, N)` bool."""
    per_patch = (pred - target).pow(2).mean(dim=-1)  # (B, N)
    return per_patch[mask].mean()


class MaeDecoder(nn.Module):
    """MAE's light decoder: encoder tokens -> decoder width, mask tokens at the hidden positions, learned positions,
    a few narrow LanguageBind blocks, a linear head to the pixels of every patch."""

    def __init__(self, tower: LanguageBindVisionConfig, hidden_size: int, num_layers: int):
        super().__init__()
        block = LanguageBindVisionConfig(
            hidden_size=hidden_size, intermediate_size=4 * hidden_size, num_hidden_layers=num_layers,
            num_attention_heads=max(1, hidden_size // 16), hidden_act=tower.hidden_act,
            layer_norm_eps=tower.layer_norm_eps, attn_implementation=tower._attn_implementation or "sdpa",
        )
        self.embed = nn.Linear(tower.hidden_size, hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.position_embedding = nn.Parameter(torch.randn(1, tower.num_patches + 1, hidden_size) * 0.02)
        self.layers = nn.ModuleList([LanguageBindEncoderLayer(block) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(hidden_size, eps=tower.layer_norm_eps)
        self.head = nn.Linear(hidden_size, tower.patch_size**2 * tower.num_channels)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: torch.Tensor, keep: torch.Tensor, num_patches: int) -> torch.Tensor:
        """latent `(B, 1+K, D)` (CLS first), keep `(B, K)` -> predicted patch pixels `(B, N, p*p*C)`."""
        x = self.embed(latent)  # (B, 1+K, d)
        b, _, d = x.shape
        patches = self.mask_token.expand(b, num_patches, d)
        patches = patches.scatter(1, keep.unsqueeze(-1).expand(-1, -1, d), x[:, 1:])  # (B, N, d), visible in place
        x = torch.cat([x[:, :1], patches], dim=1) + self.position_embedding  # (B, 1+N, d)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))[:, 1:]  # (B, N, p*p*C), CLS dropped


class MaskedAutoencoder(nn.Module):
    """A `LanguageBindVisionModel` image tower (encoder, unchanged) + `MaeDecoder`."""

    def __init__(self, tower: LanguageBindVisionModel, decoder_hidden_size: int, decoder_layers: int):
        super().__init__()
        self.tower = tower
        self.decoder = MaeDecoder(tower.config, decoder_hidden_size, decoder_layers)

    def encode_visible(self, pixels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The tower on CLS + the visible patches only: pixels `(B, 3, H, W)`, keep `(B, K)` -> `(B, 1+K, D)`."""
        tower = self.tower
        tokens = tower.embeddings(pixels)  # (B, 1+N, D), positions already added
        d = tokens.shape[-1]
        visible = tokens[:, 1:].gather(1, keep.unsqueeze(-1).expand(-1, -1, d))  # (B, K, D)
        hidden = tower.pre_layrnorm(torch.cat([tokens[:, :1], visible], dim=1))  # per-token LN: same as on all N
        for layer in tower.encoder.layers:
            hidden = layer(hidden)
        return tower.post_layernorm(hidden)

    def forward(
        self, pixels: torch.Tensor, keep: torch.Tensor, mask: torch.Tensor, norm_pix_loss: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (loss on masked patches, predicted pixels `(B, N, p*p*C)`)."""
        config = self.tower.config
        pred = self.decoder(self.encode_visible(pixels, keep), keep, config.num_patches)
        target = patchify(pixels, config.patch_size)  # (B, N, p*p*C)
        if norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        return masked_mse(pred, target, mask), pred


def image_tower_config(tower: dict) -> LanguageBindVisionConfig:
    """An image-tower config from a dict of `LanguageBindVisionConfig` fields (no temporal attention, one frame)."""
    if tower.get("add_time_attn"):
        raise ValueError("The MAE image tower has no temporal attention; got add_time_attn=True in tower_config.")
    return LanguageBindVisionConfig(**{**tower, "add_time_attn": False, "num_frames": 1})


def save_tower(tower: LanguageBindVisionModel, output: Path) -> None:
    """`output/config.json` + `output/model.safetensors` in the LanguageBind layout (`vision_model.*` keys)."""
    output.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "LanguageBindImage", "vision_config": tower.config.to_dict()}
    (output / "config.json").write_text(json.dumps(config, indent=2, default=str) + "\n")
    state = {f"vision_model.{k}": v.detach().contiguous() for k, v in tower.state_dict().items()}
    save_file(state, output / "model.safetensors")


def _lr_at(step: int, steps: int, lr: float) -> float:
    warmup = max(1, steps // 20)
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def pretrain_mae(image_paths: list[Path], tower_config: dict, output: Path, config: MaeConfig) -> dict:
    """MAE-pretrain a fresh image tower on `image_paths`, save it to `output/` (layout in the module docstring).

    Args:
        image_paths: image files (any PIL-readable format); all are preprocessed once and kept in memory.
        tower_config: `LanguageBindVisionConfig` fields of the tower (e.g. `hidden_size`, `patch_size`).
        output: folder to write.
        config: `MaeConfig`.

    Returns:
        The report also written to `output/mae_report.json`: `loss_first` / `loss_last` (means over the first and last
        `max(1, steps // 20)` steps; masks are random, so single steps are noisy), `loss_first_step`,
        `loss_last_step`, `steps`, `seconds` (training loop only), `images`, the config.
    """
    output = Path(output)
    vision = image_tower_config(tower_config)
    pixels = load_pixels([Path(p) for p in image_paths], vision)
    torch.manual_seed(config.seed)
    model = MaskedAutoencoder(LanguageBindVisionModel(vision), config.decoder_hidden_size, config.decoder_layers)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "position" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "position" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.95),
    )
    generator = torch.Generator().manual_seed(config.seed)
    order, cursor, losses = torch.randperm(len(pixels), generator=generator), 0, []
    batch_size = min(config.batch_size, len(pixels))
    log_every = max(1, config.steps // 10)
    logger.info("MAE pretraining: %d images, %d steps of %d, mask ratio %.2f, %d patches per image",
                len(pixels), config.steps, batch_size, config.mask_ratio, vision.num_patches)
    start = time.perf_counter()
    for step in range(config.steps):
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(pixels), generator=generator), 0
        batch = pixels[order[cursor : cursor + batch_size]]
        cursor += batch_size
        keep, mask = random_masking(batch_size, vision.num_patches, config.mask_ratio, generator)
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(step, config.steps, config.lr)
        loss, _ = model(batch, keep, mask, config.norm_pix_loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % log_every == 0 or step == 0:
            logger.info("step %d/%d  loss %.4f", step + 1, config.steps, losses[-1])
    seconds = time.perf_counter() - start
    window = max(1, config.steps // 20)
    report = {
        "loss_first": sum(losses[:window]) / window,
        "loss_last": sum(losses[-window:]) / window,
        "loss_first_step": losses[0],
        "loss_last_step": losses[-1],
        "loss_window": window,
        "steps": config.steps,
        "seconds": round(seconds, 2),
        "images": len(pixels),
        "config": asdict(config),
        "tower": tower_config,
    }
    save_tower(model.tower, output)
    (output / DECODER_FOLDER).mkdir(exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.decoder.state_dict().items()},
              output / DECODER_FOLDER / "model.safetensors")
    (output / "mae_report.json").write_text(json.dumps(report, indent=2) + "\n")
    logger.info("MAE loss %.4f -> %.4f in %.1f s; wrote %s", report["loss_first"], report["loss_last"], seconds,
                output)
    return report
