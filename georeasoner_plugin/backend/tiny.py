"""Tiny, randomly initialised stand-ins for Qwen2.5-VL, Qwen3-VL, SAM2 and SAM 3, built offline in seconds.

They exercise the real loading, processing and generation code paths without the 16 GB download:
tests use them, and `make-tiny` lets a user smoke-test an installation. Random weights answer
nonsense; what matters is that every shape, token id and file format is the real one.

Everything is seeded, so two builds give the same tokenizer and the same weights. The SAM 3 tracker
and detector builders live in tiny_sam3.py.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Union

from ..core.frames import QWEN_DEFAULT_MAX_PIXELS, QWEN_DEFAULT_MIN_PIXELS
from ..core.parsing import ParsedObject
from ..core.profiles import IMAGE, PROFILES

TINY_SEED = 20250601

# Qwen2.5-VL's added tokens, in the order of the released tokenizers. The vision tokens are what the
# processor and the model look up; the rest keep the vocabulary shaped like the real one.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Ordinary (not special) added tokens of the released tokenizers.
QWEN_ADDED_TEXT_TOKENS = ("<tool_call>", "</tool_call>")

_TINY_BPE_MERGES = 400

# Written for this project. Renders the layout Qwen2.5-VL was trained on: a default system turn when
# the conversation has none, <|im_start|>role\n ... <|im_end|>\n turns, each image part as
# <|vision_start|><|image_pad|><|vision_end|> (the processor expands <|image_pad|> to one token per
# merged patch), and an open assistant turn on add_generation_prompt.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}"
    "{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}"
    "{{ part['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "<|im_start|>assistant\n"
    "{% endif %}"
)

# Tiny but real geometry: patch 14 and merge 2 keep the 28-pixel factor of core/frames.py, and the
# 112-pixel attention window of the released vision towers.
TINY_QWEN_VISION = dict(
    depth=2,
    hidden_size=32,
    intermediate_size=64,
    num_heads=2,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=[1],
    tokens_per_second=2,
)
TINY_QWEN_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=8192,
    rms_norm_eps=1e-6,
    # head_dim 16 -> 8 rotary frequencies, split over (temporal, height, width) like [16, 24, 24] of 64.
    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
)

# SAM2 at a quarter of the real input size: 256 px in, 64/32/16 feature maps (strides 4/8/16), 64 px
# low-resolution masks. The prompt encoder, the processor's resize and the coordinate target size
# all have to agree on TINY_SAM_IMAGE_SIZE.
TINY_SAM_IMAGE_SIZE = 256
TINY_SAM_HIDDEN = 32


def _training_corpus() -> List[str]:
    """Text the tiny tokenizer learns its merges from: our prompts and answers in every profile's format."""
    texts: List[str] = []
    examples = [
        ParsedObject(box=(120, 64, 388, 301), points=[(251, 180), (340, 122)], label="lake"),
        ParsedObject(box=(30, 410, 96, 470), points=[(62, 441)], label="field"),
        ParsedObject(box=(0, 7, 839, 555), points=[], label="road"),
    ]
    for profile in PROFILES.values():
        if profile.system_prompt:
            texts.append(profile.system_prompt)
        texts.extend(part for part in profile.user_parts if part != IMAGE)
        texts.append(profile.render_answer(examples, reasoning="The lakes lie east of the road, near the fields."))
        texts.append(profile.render_answer([], reasoning="Nothing in the image matches."))
    texts.append("0 1 2 3 4 5 6 7 8 9 10 28 56 112 224 448 840 [ ] { } ( ) \" ' , : ; . ! ? - _ / \\ ` ```json")
    return texts


def _train_qwen_tokenizer():
    """A byte-level BPE with Qwen's pre-tokenisation and special tokens, trained on the spot."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE
    from transformers import AddedToken
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    bpe = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    # Qwen's own pre-tokenisation, so the tiny vocabulary segments text the way the released one
    # does (digits one by one, punctuation runs, words with their leading space).
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=len(alphabet) + _TINY_BPE_MERGES,
        min_frequency=1,
        initial_alphabet=alphabet,
        special_tokens=[],
        show_progress=False,
    )
    bpe.train_from_iterator(_training_corpus(), trainer=trainer)
    trained = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]

    # The added tokens follow the learned vocabulary in a fixed order (as in the released tokenizers,
    # where <|endoftext|> is the first id after the BPE vocabulary), so ids never depend on set order.
    vocab = dict(trained["vocab"])
    for token in QWEN_SPECIAL_TOKENS + QWEN_ADDED_TEXT_TOKENS:
        vocab[token] = len(vocab)

    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=[t for t in QWEN_SPECIAL_TOKENS if t != "<|endoftext|>"],
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS],
                         special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN_ADDED_TEXT_TOKENS])
    return tokenizer


def make_tiny_qwen(out_dir: Union[str, Path]) -> Path:
    """Write a 2-layer Qwen2.5-VL with its processor (safetensors) to out_dir; return the directory."""
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
    )
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_qwen_tokenizer()
    token_id = tokenizer.convert_tokens_to_ids

    pixel_bounds = dict(min_pixels=QWEN_DEFAULT_MIN_PIXELS, max_pixels=QWEN_DEFAULT_MAX_PIXELS)
    image_processor = Qwen2VLImageProcessor(patch_size=14, temporal_patch_size=2, merge_size=2, **pixel_bounds)
    video_processor = Qwen2VLVideoProcessor(patch_size=14, temporal_patch_size=2, merge_size=2, **pixel_bounds)
    processor = Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                    video_processor=video_processor, chat_template=QWEN_CHAT_TEMPLATE)

    # Rounded up like the released checkpoints (151936 rows for 151665 tokens): spare rows are harmless.
    vocab_size = -(-len(tokenizer) // 64) * 64
    config = Qwen2_5_VLConfig(
        text_config=dict(TINY_QWEN_TEXT, vocab_size=vocab_size, bos_token_id=token_id("<|endoftext|>"),
                         eos_token_id=token_id("<|im_end|>"), pad_token_id=token_id("<|endoftext|>")),
        vision_config=dict(TINY_QWEN_VISION, out_hidden_size=TINY_QWEN_TEXT["hidden_size"]),
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    config.architectures = ["Qwen2_5_VLForConditionalGeneration"]

    torch.manual_seed(TINY_SEED)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=token_id("<|endoftext|>"),
        eos_token_id=[token_id("<|im_end|>"), token_id("<|endoftext|>")],
        pad_token_id=token_id("<|endoftext|>"),
        do_sample=False,
    )
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out


def make_tiny_sam2(out_dir: Union[str, Path]) -> Path:
    """Write a small-Hiera Sam2Model with its Sam2Processor (safetensors) to out_dir; return the directory."""
    import torch
    from transformers import Sam2Config, Sam2Model, Sam2Processor
    from transformers.models.sam2.image_processing_sam2 import Sam2ImageProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = TINY_SAM_IMAGE_SIZE
    stage_dims = [16, 32, 64, 128]
    # Hiera strides 4, 8, 16, 32; the neck keeps the three finest levels for the mask decoder.
    feature_sizes = [[size // 4] * 2, [size // 8] * 2, [size // 16] * 2]
    config = Sam2Config(
        vision_config=dict(
            model_type="sam2_vision_model",
            backbone_config=dict(
                model_type="sam2_hiera_det_model",
                hidden_size=stage_dims[0],
                image_size=[size, size],
                blocks_per_stage=[1, 1, 2, 1],
                embed_dim_per_stage=stage_dims,
                num_attention_heads_per_stage=[1, 1, 2, 2],
                window_size_per_stage=[8, 4, 8, 4],
                global_attention_blocks=[3],
            ),
            backbone_channel_list=list(reversed(stage_dims)),
            backbone_feature_sizes=feature_sizes,
            fpn_hidden_size=TINY_SAM_HIDDEN,
        ),
        prompt_encoder_config=dict(hidden_size=TINY_SAM_HIDDEN, image_size=size, patch_size=16),
        mask_decoder_config=dict(hidden_size=TINY_SAM_HIDDEN, mlp_dim=64, num_attention_heads=2,
                                 iou_head_hidden_dim=32),
    )
    config.architectures = ["Sam2Model"]

    torch.manual_seed(TINY_SEED + 1)
    model = Sam2Model(config).eval()
    model.save_pretrained(out, safe_serialization=True)

    image_processor = Sam2ImageProcessor(size={"height": size, "width": size},
                                         mask_size={"height": size // 4, "width": size // 4})
    Sam2Processor(image_processor=image_processor, target_size=size).save_pretrained(out)
    return out


# Qwen3-VL: patch 16 x merge 2 (factor 32 of core.frames.QWEN3_PATCH_FACTOR), interleaved M-RoPE and
# one DeepStack level, as in the released models, at toy widths.
TINY_QWEN3_VISION = dict(
    depth=2,
    hidden_size=32,
    intermediate_size=64,
    num_heads=2,
    patch_size=16,
    spatial_merge_size=2,
    temporal_patch_size=2,
    num_position_embeddings=256,  # a 16 x 16 grid of learned positions, interpolated to any image
    deepstack_visual_indexes=[0],
)
TINY_QWEN3_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=8192,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [2, 3, 3],
                     "mrope_interleaved": True},
)
TINY_QWEN3_MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1)
def make_tiny_qwen3(out_dir: Union[str, Path], moe: bool = False) -> Path:
    """Write a 2-layer Qwen3-VL (moe: Qwen3-VL-MoE, 4 experts) with its processor to out_dir; return it."""
    import torch
    import transformers
    from transformers import GenerationConfig, Qwen3VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    from ..core.frames import QWEN3_DEFAULT_MIN_PIXELS, QWEN3_PROCESSOR_MAX_PIXELS

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_qwen_tokenizer()
    token_id = tokenizer.convert_tokens_to_ids
    # transformers maps qwen3_vl to the Qwen2-VL image processor; the checkpoint sets patch 16 and the
    # [-1, 1] normalisation (mean = std = 0.5).
    image_processor = Qwen2VLImageProcessor(
        patch_size=16, temporal_patch_size=2, merge_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3,
        size={"shortest_edge": QWEN3_DEFAULT_MIN_PIXELS, "longest_edge": QWEN3_PROCESSOR_MAX_PIXELS})
    processor = Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                 video_processor=Qwen3VLVideoProcessor(), chat_template=QWEN_CHAT_TEMPLATE)
    vocab_size = -(-len(tokenizer) // 64) * 64
    family = "Qwen3VLMoe" if moe else "Qwen3VL"
    text = dict(TINY_QWEN3_TEXT, **(TINY_QWEN3_MOE if moe else {}))
    config = getattr(transformers, f"{family}Config")(
        text_config=dict(text, vocab_size=vocab_size, bos_token_id=token_id("<|endoftext|>"),
                         eos_token_id=token_id("<|im_end|>"), pad_token_id=token_id("<|endoftext|>")),
        vision_config=dict(TINY_QWEN3_VISION, out_hidden_size=TINY_QWEN3_TEXT["hidden_size"]),
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
        tie_word_embeddings=False,
    )
    config.architectures = [f"{family}ForConditionalGeneration"]
    torch.manual_seed(TINY_SEED + 2)
    model = getattr(transformers, f"{family}ForConditionalGeneration")(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=token_id("<|endoftext|>"),
        eos_token_id=[token_id("<|im_end|>"), token_id("<|endoftext|>")],
        pad_token_id=token_id("<|endoftext|>"),
        do_sample=False,
    )
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    return out


# Roles of the tiny-model manifest (models.json). "reasoner" and "segmenter" are the Qwen2.5-VL and
# SAM2 pair every older caller reads; the Qwen3-VL and SAM 3 twins sit beside them.
TINY_BUILDERS = {
    "reasoner": ("tiny-qwen2.5-vl", make_tiny_qwen),
    "segmenter": ("tiny-sam2", make_tiny_sam2),
    "reasoner_qwen3": ("tiny-qwen3-vl", make_tiny_qwen3),
    "segmenter_sam3": ("tiny-sam3-tracker", lambda out: _tiny_sam3().make_tiny_sam3(out)),
    "instances_sam3": ("tiny-sam3-detector", lambda out: _tiny_sam3().make_tiny_sam3_detector(out)),
    # Built on demand only (tests); not part of make-tiny.
    "reasoner_qwen3_moe": ("tiny-qwen3-vl-moe", lambda out: make_tiny_qwen3(out, moe=True)),
}
DEFAULT_TINY_ROLES = ("reasoner", "segmenter")
ALL_TINY_ROLES = ("reasoner", "segmenter", "reasoner_qwen3", "segmenter_sam3", "instances_sam3")


def _tiny_sam3():
    from . import tiny_sam3  # imports this module's constants, so it is loaded after them

    return tiny_sam3


def make_tiny_models(out_dir: Union[str, Path], roles=DEFAULT_TINY_ROLES) -> Dict[str, Path]:
    """Tiny models under out_dir, {role: <dir>}; by default the Qwen2.5-VL reasoner and the SAM2 segmenter."""
    out = Path(out_dir)
    unknown = [r for r in roles if r not in TINY_BUILDERS]
    if unknown:
        raise ValueError(f"unknown tiny-model role(s) {', '.join(unknown)}; known: {', '.join(TINY_BUILDERS)}")
    return {role: TINY_BUILDERS[role][1](out / TINY_BUILDERS[role][0]) for role in roles}
