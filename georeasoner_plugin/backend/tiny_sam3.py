"""Tiny random SAM 3 models (issue 12): the tracker (box and point prompts, like SAM2) and the
detector (noun-phrase prompts, for --expand instances). Built offline in seconds; see tiny.py."""
from __future__ import annotations

from pathlib import Path
from typing import Union

from .tiny import TINY_SAM_HIDDEN, TINY_SEED

# SAM 3's tracker at 224 px (the real one: 1008 px, ViT patch 14, 72 x 72 tokens); the FPN gives
# 4x, 2x and 1x the token grid, the mask decoder 4x low-resolution masks.
TINY_SAM3_IMAGE_SIZE = 224
TINY_SAM3_PATCH = 14


def make_tiny_sam3(out_dir: Union[str, Path]) -> Path:
    """Write a small SAM 3 tracker (Sam3TrackerModel + Sam3TrackerProcessor, safetensors); return the directory."""
    import torch
    from transformers import Sam3TrackerConfig, Sam3TrackerModel, Sam3TrackerProcessor
    from transformers.models.sam3.image_processing_sam3 import Sam3ImageProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = TINY_SAM3_IMAGE_SIZE
    grid = size // TINY_SAM3_PATCH
    config = Sam3TrackerConfig(
        vision_config=dict(
            model_type="sam3_vision_model",
            backbone_config=dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=2, image_size=size,
                                 patch_size=TINY_SAM3_PATCH, window_size=8, global_attn_indexes=[1],
                                 pretrain_image_size=size),
            fpn_hidden_size=TINY_SAM_HIDDEN,
            backbone_feature_sizes=[[4 * grid] * 2, [2 * grid] * 2, [grid] * 2],
        ),
        prompt_encoder_config=dict(hidden_size=TINY_SAM_HIDDEN, image_size=size, patch_size=TINY_SAM3_PATCH),
        mask_decoder_config=dict(hidden_size=TINY_SAM_HIDDEN, mlp_dim=64, num_attention_heads=2,
                                 iou_head_hidden_dim=32),
    )
    config.architectures = ["Sam3TrackerModel"]
    torch.manual_seed(TINY_SEED + 3)
    Sam3TrackerModel(config).eval().save_pretrained(out, safe_serialization=True)
    image_processor = Sam3ImageProcessor(size={"height": size, "width": size},
                                         mask_size={"height": 4 * grid, "width": 4 * grid})
    Sam3TrackerProcessor(image_processor=image_processor, target_size=size).save_pretrained(out)
    return out


def make_tiny_sam3_detector(out_dir: Union[str, Path]) -> Path:
    """Write a small SAM 3 detector (Sam3Model + Sam3Processor with a CLIP tokenizer) for --expand instances."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer, Sam3Config, Sam3Model, Sam3Processor
    from transformers.models.sam3.image_processing_sam3 import Sam3ImageProcessor

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # A character-level CLIP vocabulary (every byte, alone and word-final), no merges: any noun phrase
    # encodes to real token ids, built offline without training anything.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    for suffix in ("", "</w>"):
        for char in alphabet:
            vocab[char + suffix] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=32)
    size, hidden = TINY_SAM3_IMAGE_SIZE, TINY_SAM_HIDDEN
    grid = size // TINY_SAM3_PATCH
    small = dict(num_attention_heads=2, intermediate_size=64)
    config = Sam3Config(
        vision_config=dict(
            model_type="sam3_vision_model",
            backbone_config=dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64,
                                 num_hidden_layers=2, num_attention_heads=2, image_size=size,
                                 patch_size=TINY_SAM3_PATCH, window_size=8, global_attn_indexes=[1],
                                 pretrain_image_size=size),
            fpn_hidden_size=hidden,
            backbone_feature_sizes=[[4 * grid] * 2, [2 * grid] * 2, [grid] * 2],
        ),
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, projection_dim=32,
                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1),
        geometry_encoder_config=dict(hidden_size=hidden, num_layers=1, **small),
        detr_encoder_config=dict(hidden_size=hidden, num_layers=1, **small),
        detr_decoder_config=dict(hidden_size=hidden, num_layers=1, num_queries=20, **small),
        mask_decoder_config=dict(hidden_size=hidden, num_attention_heads=2),
    )
    config.architectures = ["Sam3Model"]
    torch.manual_seed(TINY_SEED + 4)
    Sam3Model(config).eval().save_pretrained(out, safe_serialization=True)
    image_processor = Sam3ImageProcessor(size={"height": size, "width": size},
                                         mask_size={"height": 4 * grid, "width": 4 * grid})
    Sam3Processor(image_processor=image_processor, tokenizer=tokenizer, target_size=size).save_pretrained(out)
    return out
