"""A KV cache that appends in place, the default cache of `LanguageBindVideoLlavaForConditionalGeneration.generate`.

transformers' `DynamicLayer.update` does `torch.cat([keys, new])` every step: with a ~2,100-token video prompt that
allocates and copies the whole cache, for every layer, keys and values, on every generated token, and the copy grows
with the batch. Measured on CPU with the bench "small" config (4-layer LLM, 2,089-token prompt, 15 decode steps, 2
threads; torch.profiler): `aten::cat` took 20% of decode time at batch 1 (~2.8 ms a step) and 54% at batch 4
(~33 ms a step, of ~61). It is also what made batch 4 erratic: each `cat` output is a fresh 17 MB tensor that the
allocator often takes from (and gives back to) the OS, so a step page-faults it in: 361,034 minor faults in 15 batch-4
decode steps (~94 MB of new pages a step), steps creeping from 57 to 131 ms, versus 67 faults with this cache; how
bad it gets depends on the allocator's state, hence the spread between runs. Interleaved on the same process (1
thread, 2 rounds), decode tokens/s b1 -> b4 went 34 -> 50 (x1.47) with DynamicCache and 47 -> 92 (x2.10) with this.

`AppendLayer` keeps each layer's keys and values in a buffer with `headroom` free positions and writes new states
into it; attention gets a view of the filled part, so a decode step copies only its own token. Built on the public
cache API of transformers 5.23 (`transformers.cache_utils.DynamicCache` / `DynamicLayer`): everything but `update`
(crop, reorder for beams, batch select, seq length, masks) is `DynamicLayer`'s, reading `self.keys` / `self.values`,
which always hold the filled part `(B, H, S, D)`. When one of those methods replaces them with a new tensor, the next
`update` moves them into a fresh buffer.
"""

import torch
from transformers import PreTrainedConfig
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer


class AppendLayer(DynamicLayer):
    """`DynamicLayer` whose `update` appends into a preallocated buffer instead of concatenating.

    Args:
        headroom (`int`, defaults to 256): free positions left after the filled part each time a buffer is allocated,
            so a new buffer (and one full copy) is needed once every `headroom` decoded tokens.
    """

    def __init__(self, headroom: int = 256, **kwargs):
        super().__init__(**kwargs)
        self.headroom = headroom
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append `key_states` / `value_states` `(B, H, n, D)`; return all cached keys and values `(B, H, S+n, D)`."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.key_buffer, self.keys = self._append(self.key_buffer, self.keys, key_states)
        self.value_buffer, self.values = self._append(self.value_buffer, self.values, value_states)
        return self.keys, self.values

    def _append(
        self, buffer: torch.Tensor | None, filled: torch.Tensor, new: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write `new` after `filled` in `buffer`, reallocating when `filled` is not the buffer's head (a new
        cache, or a tensor that `reorder_cache` / `batch_select_indices` put there) or when the buffer is full."""
        length = filled.shape[-2] if filled.numel() else 0
        end = length + new.shape[-2]
        reusable = (
            buffer is not None
            and (length == 0 or filled.data_ptr() == buffer.data_ptr())
            and buffer.shape[:2] == new.shape[:2]
            and buffer.shape[-1] == new.shape[-1]
            and buffer.dtype == new.dtype
            and buffer.device == new.device
            and end <= buffer.shape[-2]
        )
        if not reusable:
            batch, heads, _, dim = new.shape
            buffer = new.new_empty(batch, heads, end + self.headroom, dim)  # (B, H, capacity, D)
            if length:
                buffer[:, :, :length].copy_(filled)
        buffer[:, :, length:end].copy_(new)
        return buffer, buffer[:, :, :end]

    def reset(self) -> None:
        """Drop the cached states and the buffers."""
        self.key_buffer = self.value_buffer = None
        super().reset()


class AppendCache(DynamicCache):
    """`DynamicCache` made of `AppendLayer`s, added lazily, one per decoder layer, as `DynamicCache` does without
    a config. Fits decoders whose layers all use full attention (see `fits`)."""

    def __init__(self):
        Cache.__init__(self, layer_class_to_replicate=AppendLayer)

    @staticmethod
    def fits(text_config: PreTrainedConfig) -> bool:
        """Whether every decoder layer of `text_config` uses full attention (no sliding window, no linear attention),
        the only layers `AppendCache` builds."""
        layer_types = getattr(text_config, "layer_types", None) or ["full_attention"]
        return getattr(text_config, "sliding_window", None) is None and set(layer_types) == {"full_attention"}


def new_cache(text_config: PreTrainedConfig) -> DynamicCache:
    """An empty cache for a caller that builds its own (a shared prefix, a chat's conversation): `AppendCache` where
    it fits, else transformers' `DynamicCache`."""
    return AppendCache() if AppendCache.fits(text_config) else DynamicCache(config=text_config)

