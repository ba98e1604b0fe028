"""How answers are generated: vLLM in batches on a CUDA GPU, or the backend's Reasoner one by one;
and the SAM2 segmenter."""
from __future__ import annotations

import importlib.util
from typing import List, Optional

import numpy as np

from georeasoner_plugin.core.profiles import get_profile

from ..errors import OptionError
from .options import EvalOptions

# --------------------------------------------------------------------------- generation engines

def vllm_usable() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


class VllmGenerator:
    """Batched generation with vLLM (needs a CUDA GPU); the cascade then replays each output.

    Not exercised by the tests (no GPU here). The image is resized to the profile's frame first,
    as the cascade would, and vLLM's processor bounds are opened wide so that its own smart
    resize leaves a frame (sides already multiples of 28) exactly as it is.
    """

    def __init__(self, model: str, adapter: Optional[str], options: EvalOptions):
        from transformers import AutoProcessor
        from vllm import LLM, SamplingParams

        from georeasoner_plugin.backend.models import resolve_adapter_dir, resolve_model_dir
        from georeasoner_plugin.core.frames import QWEN_PATCH_FACTOR

        model_dir = resolve_model_dir(model)
        self.processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
        self.llm = LLM(model=str(model_dir), trust_remote_code=False, limit_mm_per_prompt={"image": 1},
                       enable_lora=adapter is not None, seed=options.seed,
                       mm_processor_kwargs={"min_pixels": QWEN_PATCH_FACTOR ** 2,
                                            "max_pixels": 16384 * QWEN_PATCH_FACTOR ** 2})
        self.lora = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, str(resolve_adapter_dir(adapter)))
        self.sampling = SamplingParams(max_tokens=options.max_new_tokens, temperature=options.temperature,
                                       seed=options.seed)
        self.name = f"vLLM {model}"

    def generate_batch(self, images: List[np.ndarray], questions: List[str], profile) -> List[str]:
        # The cascade's own resize: the frame the answer's numbers refer to must be exactly its frame.
        from georeasoner_plugin.backend.cascade import resize_to_frame

        prompts = []
        for image, question in zip(images, questions):
            height, width = image.shape[:2]
            frame = profile.frame.frame_for(width, height)
            model_image = resize_to_frame(image, frame.frame_width, frame.frame_height, profile.frame.kind)
            text = self.processor.apply_chat_template(profile.messages(question), tokenize=False,
                                                      add_generation_prompt=True)
            prompts.append({"prompt": text, "multi_modal_data": {"image": model_image}})
        outputs = self.llm.generate(prompts, self.sampling, lora_request=self.lora, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]


def _load_models(options: EvalOptions, needs_reasoner: bool, needs_segmenter: bool = True):
    """(reasoner or None, vLLM generator or None, segmenter or None, engine description).

    A model that cannot be found raises the backend's ModelLoadError, which says what to download.
    """
    reasoner = generator = segmenter = None
    engine = "recorded outputs"
    model = options.model or get_profile(options.profile).default_checkpoint
    if needs_reasoner:
        use_vllm = options.engine == "vllm" or (options.engine == "auto" and vllm_usable())
        if options.engine == "vllm" and not vllm_usable():
            raise OptionError("--engine vllm needs the vllm package and a CUDA GPU; use --engine transformers")
        if use_vllm:
            generator = VllmGenerator(model, options.adapter, options)
            engine = f"vLLM, batches of {options.batch_size}"
        else:
            from georeasoner_plugin.backend.reasoner import Reasoner

            reasoner = Reasoner(model, adapter=options.adapter, device=options.device, dtype=options.dtype)
            # Reasoner serialises calls on one model, so samples run one after another.
            engine = f"transformers on {reasoner.device} ({str(reasoner.dtype).removeprefix('torch.')}), " \
                     "one sample at a time"
    if options.needs_masks and needs_segmenter:
        from georeasoner_plugin.backend.segmenter import Segmenter

        segmenter = Segmenter(options.segmenter, device=options.device, dtype=options.dtype)
    return reasoner, generator, segmenter, engine
