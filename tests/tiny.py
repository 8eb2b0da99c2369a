"""Tiny look-alikes of Video-LLaVA-7B for CPU tests: same structure, a few thousand parameters."""

from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from modeling_videollava.configuration_videollava import LanguageBindVideoLlavaConfig


WORDS = (
    "a chat between curious user and an artificial intelligence assistant . the gives helpful , detailed polite "
    "answers to 's questions human USER ASSISTANT : what is in this image video ? describe it red green blue "
    "square circle triangle moving left right up down yes no one two three colour shape first"
).split()
SPECIAL = ["<unk>", "<s>", "</s>"]
MEDIA = ["<image>", "<video>", "<pad>"]


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer: ids 0-2 `<unk> <s> </s>`, then words, then `<image> <video> <pad>`."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL + sorted(set(WORDS)) + ["\n"])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[ \t]+"), behavior="removed"),
            pre_tokenizers.Split(Regex(r"\n|[.,?:]|'s|<image>|<video>"), behavior="isolated"),
        ]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )
    tok.add_special_tokens({"additional_special_tokens": MEDIA[:2]})
    tok.add_special_tokens({"pad_token": MEDIA[2]})
    return tok


def tiny_config(num_frames: int = 2, add_time_attn: bool = True, vocab_size: int = 128, **kwargs) -> LanguageBindVideoLlavaConfig:
    """Towers: 28 px images, 14 px patches -> 4 patches (+CLS) per frame, 2 layers of width 32."""
    tok = tiny_tokenizer()
    tower = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=28, patch_size=14
    )
    text = dict(
        model_type="llama",
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab_size,
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return LanguageBindVideoLlavaConfig(
        image_config=dict(tower, num_frames=1),
        video_config=dict(tower, num_frames=num_frames, add_time_attn=add_time_attn),
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        **kwargs,
    )
