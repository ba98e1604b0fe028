"""The models GeoReasoner runs, as their published config.json values, for `python -m bench gpu`.

GPU time per token and per image depends on the shapes of the weights, not on their values, so a
model built from its published configuration with random weights costs what the released one
costs. The values below are facts read from each checkpoint's published config.json (source named
beside each entry); nothing is downloaded. ``tiny=True`` keeps every structural switch (window
attention, full-attention blocks, deep-stack indexes, multi-scale backbone) and shrinks widths and
depths so that the test suite builds the very same code path on the CPU in a second.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

# Qwen2.5-VL vision tower: identical in the 3B and the 7B release (config.json "vision_config").
_QWEN25_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, in_chans=3,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                      fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, hidden_act="silu")
_QWEN_TOKENS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                    vision_end_token_id=151653)

QWEN25_VL_3B = {
    "source": "Qwen/Qwen2.5-VL-3B-Instruct config.json",
    "vision": dict(_QWEN25_VISION, out_hidden_size=2048),
    "text": dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                 num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000,
                 rope_theta=1000000.0, rms_norm_eps=1e-6, hidden_act="silu", mrope_section=[16, 24, 24],
                 bos_token_id=151643, eos_token_id=151645),
    "tie_word_embeddings": True,
}
QWEN25_VL_7B = {
    "source": "Qwen/Qwen2.5-VL-7B-Instruct config.json",
    "vision": dict(_QWEN25_VISION, out_hidden_size=3584),
    "text": dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=128000,
                 rope_theta=1000000.0, rms_norm_eps=1e-6, hidden_act="silu", mrope_section=[16, 24, 24],
                 bos_token_id=151643, eos_token_id=151645),
    "tie_word_embeddings": False,
}
QWEN3_VL_8B = {
    "source": "Qwen/Qwen3-VL-8B-Instruct config.json",
    "vision": dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, in_channels=3,
                   patch_size=16, spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=4096,
                   num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24],
                   hidden_act="gelu_pytorch_tanh"),
    "text": dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                 num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=262144,
                 rope_theta=5000000.0, rms_norm_eps=1e-6, hidden_act="silu", mrope_section=[24, 20, 20],
                 bos_token_id=151643, eos_token_id=151645),
    "tie_word_embeddings": False,
}
# SAM 2.1 Hiera-L: facebook/sam2.1-hiera-large config.json (the original sam2.1_hiera_l.yaml:
# embed_dim 144, num_heads 2, stages [2, 6, 36, 4], global_att_blocks [23, 33, 43],
# window_spec [8, 4, 16, 8], window_pos_embed_bkg_spatial_size [7, 7]).
SAM21_HIERA_LARGE = {
    "source": "facebook/sam2.1-hiera-large config.json",
    "backbone": dict(model_type="sam2_hiera_det_model", hidden_size=144, num_attention_heads=2, blocks_per_stage=[2, 6, 36, 4],
                     embed_dim_per_stage=[144, 288, 576, 1152], num_attention_heads_per_stage=[2, 4, 8, 16],
                     window_size_per_stage=[8, 4, 16, 8], global_attention_blocks=[23, 33, 43],
                     window_positional_embedding_background_size=[7, 7], image_size=[1024, 1024]),
    "vision": dict(backbone_channel_list=[1152, 576, 288, 144], fpn_hidden_size=256,
                   fpn_top_down_levels=[2, 3], num_feature_levels=3),
    "prompt_encoder": dict(hidden_size=256, image_size=1024, patch_size=16, mask_input_channels=16),
    "mask_decoder": dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=8, mlp_dim=2048,
                         num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=256),
}
# SAM 3: facebook/sam3 config.json (a 32-layer ViT at 1008 px with windowed attention and four
# global blocks, a 24-layer CLIP-style text encoder, DETR encoder/decoder with 200 queries).
SAM3 = {
    "source": "facebook/sam3 config.json",
    "backbone": dict(model_type="sam3_vit_model", hidden_size=1024, intermediate_size=4736, num_hidden_layers=32,
                     num_attention_heads=16,
                     image_size=1008, patch_size=14, window_size=24, global_attn_indexes=[7, 15, 23, 31]),
    "text": dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, projection_dim=512,
                 num_hidden_layers=24, num_attention_heads=16, max_position_embeddings=32),
    "detr_decoder": dict(num_layers=6, num_queries=200),
    "detr_encoder": dict(num_layers=6),
}


@dataclass(frozen=True)
class BenchModel:
    key: str  # name in tables and JSON
    kind: str  # "reasoner" or "segmenter"
    facts: Dict[str, Any]
    build_config: Callable[[bool], Any]  # tiny -> a transformers config
    model_class: str  # transformers class name
    check_import: Callable[[], Optional[str]]  # None when usable, else why not


def _import_error(*names: str) -> Optional[str]:
    try:
        import transformers
    except ImportError:
        return "transformers is not installed (pip install -e '.[backend]')"
    missing = [n for n in names if not hasattr(transformers, n)]
    if missing:
        return f"transformers {transformers.__version__} has no {', '.join(missing)}"
    return None


def _tiny_qwen(vision: Dict[str, Any], text: Dict[str, Any], tokens: Dict[str, int]) -> None:
    vision.update(depth=4, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64)
    if "fullatt_block_indexes" in vision:
        vision["fullatt_block_indexes"] = [1, 3]
    if "deepstack_visual_indexes" in vision:
        vision["deepstack_visual_indexes"] = [1, 2]
    text.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=2048, bos_token_id=2040, eos_token_id=2041)
    if "head_dim" in text:
        text["head_dim"] = 16
    # mrope sections are in units of half the head dimension: 16 / 2 = 8 = 2 + 3 + 3
    text["mrope_section"] = [2, 3, 3]
    # special tokens moved inside the small vocabulary
    tokens.update(image_token_id=2030, video_token_id=2031, vision_start_token_id=2032, vision_end_token_id=2033)


def _qwen25_config(facts: Dict[str, Any]):
    def build(tiny: bool):
        from transformers import Qwen2_5_VLConfig

        vision, text, tokens = copy.deepcopy(facts["vision"]), copy.deepcopy(facts["text"]), dict(_QWEN_TOKENS)
        if tiny:
            _tiny_qwen(vision, text, tokens)
        section = text.pop("mrope_section")
        theta = text.pop("rope_theta")
        text["rope_parameters"] = {"rope_type": "default", "mrope_section": section, "rope_theta": theta}
        return Qwen2_5_VLConfig(vision_config=vision, text_config=text, tie_word_embeddings=facts["tie_word_embeddings"],
                                **tokens)
    return build


def _qwen3_config(facts: Dict[str, Any]):
    def build(tiny: bool):
        from transformers import Qwen3VLConfig

        vision, text, tokens = copy.deepcopy(facts["vision"]), copy.deepcopy(facts["text"]), dict(_QWEN_TOKENS)
        if tiny:
            _tiny_qwen(vision, text, tokens)
        section = text.pop("mrope_section")
        theta = text.pop("rope_theta")
        text["rope_parameters"] = {"rope_type": "default", "mrope_section": section, "rope_theta": theta,
                                   "mrope_interleaved": True}
        return Qwen3VLConfig(vision_config=vision, text_config=text, tie_word_embeddings=facts["tie_word_embeddings"],
                             **tokens)
    return build


def _sam2_config(tiny: bool):
    from transformers import Sam2Config

    facts = copy.deepcopy(SAM21_HIERA_LARGE)
    backbone, vision = facts["backbone"], facts["vision"]
    if tiny:  # four stages, windows and a global block kept; 256 px in (strides 4/8/16 -> 64/32/16)
        backbone.update(hidden_size=8, image_size=[256, 256], blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[8, 16, 32, 64],
                        num_attention_heads_per_stage=[1, 1, 2, 2], global_attention_blocks=[3],
                        num_attention_heads=1)
        vision.update(backbone_channel_list=[64, 32, 16, 8], fpn_hidden_size=32,
                      backbone_feature_sizes=[[64, 64], [32, 32], [16, 16]])
        facts["prompt_encoder"].update(hidden_size=32, image_size=256)
        facts["mask_decoder"].update(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32)
    vision["backbone_config"] = backbone
    return Sam2Config(vision_config=vision, prompt_encoder_config=facts["prompt_encoder"],
                      mask_decoder_config=facts["mask_decoder"])


def _sam3_config(tiny: bool):
    from transformers import Sam3Config

    facts = copy.deepcopy(SAM3)
    backbone, text = facts["backbone"], facts["text"]
    if tiny:
        backbone.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                        global_attn_indexes=[1], image_size=224)
        text.update(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, projection_dim=32)
        small = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2)
        facts["detr_decoder"].update(num_layers=1, num_queries=8, **small)
        facts["detr_encoder"].update(num_layers=1, **small)
        facts["geometry_encoder"] = dict(num_layers=1, **small)
        facts["mask_decoder"] = dict(hidden_size=32, num_attention_heads=2)
    vision = {"backbone_config": backbone}
    if tiny:
        side = backbone["image_size"] // backbone["patch_size"]
        vision.update(backbone_feature_sizes=[[side * 4, side * 4], [side * 2, side * 2], [side, side]],
                      fpn_hidden_size=32)
    return Sam3Config(vision_config=vision, text_config=text, detr_decoder_config=facts["detr_decoder"],
                      detr_encoder_config=facts["detr_encoder"],
                      geometry_encoder_config=facts.get("geometry_encoder"), mask_decoder_config=facts.get("mask_decoder"))


MODELS = (
    BenchModel("qwen2.5-vl-3b", "reasoner", QWEN25_VL_3B, _qwen25_config(QWEN25_VL_3B),
               "Qwen2_5_VLForConditionalGeneration", lambda: _import_error("Qwen2_5_VLForConditionalGeneration")),
    BenchModel("qwen2.5-vl-7b", "reasoner", QWEN25_VL_7B, _qwen25_config(QWEN25_VL_7B),
               "Qwen2_5_VLForConditionalGeneration", lambda: _import_error("Qwen2_5_VLForConditionalGeneration")),
    BenchModel("qwen3-vl-8b", "reasoner", QWEN3_VL_8B, _qwen3_config(QWEN3_VL_8B),
               "Qwen3VLForConditionalGeneration", lambda: _import_error("Qwen3VLForConditionalGeneration")),
    BenchModel("sam2.1-hiera-large", "segmenter", SAM21_HIERA_LARGE, _sam2_config, "Sam2Model",
               lambda: _import_error("Sam2Model")),
    BenchModel("sam3", "segmenter", SAM3, _sam3_config, "Sam3Model", lambda: _import_error("Sam3Model")),
)


def get_model(key: str) -> BenchModel:
    for model in MODELS:
        if model.key == key:
            return model
    raise KeyError(f"unknown bench model {key!r}; known: {', '.join(m.key for m in MODELS)}")
