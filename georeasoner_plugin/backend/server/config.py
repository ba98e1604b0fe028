"""ServiceConfig: what the service loads and the limits it enforces (the CLI's `serve` options)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from ...core.api import (DEFAULT_BODY_TIMEOUT_S, DEFAULT_HEADER_TIMEOUT_S, DEFAULT_IMAGE_MEMORY_BYTES,
                         DEFAULT_KEEP_ALIVE_S, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_DECODES,
                         DEFAULT_QUEUE_SIZE, DEFAULT_SHUTDOWN_GRACE_S, DEFAULT_TIMEOUT_S, MAX_IMAGE_PIXELS)
from ...core.profiles import DEFAULT_PROFILE, get_profile


@dataclass
class ServiceConfig:
    """What the service loads and the limits it enforces (the CLI's `serve` options)."""

    profile: str = DEFAULT_PROFILE
    reasoner: Optional[str] = None  # hub id or folder; None: the profile's published checkpoint
    adapter: Optional[str] = None
    segmenter: Optional[str] = None  # None: no SAM2, only boxes and points can be asked for
    recorded_output: Optional[str] = None  # replay mode: this raw model output answers every question
    recorded_source: Optional[str] = None  # where the recorded output came from (for info and health)
    reasoner_url: Optional[str] = None  # OpenAI-compatible endpoint instead of an in-process reasoner
    reasoner_model: Optional[str] = None
    reasoner_api_key: Optional[str] = None
    device: str = "auto"
    dtype: str = "auto"
    queue_size: int = DEFAULT_QUEUE_SIZE
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_image_pixels: int = MAX_IMAGE_PIXELS
    instance_model: Optional[str] = None  # --expand instances: SAM 3's detector (issue 12); None: off
    image_memory_bytes: int = DEFAULT_IMAGE_MEMORY_BYTES
    max_decodes: int = DEFAULT_MAX_DECODES
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S
    shared_capture_dir: Optional[str] = None  # core/transport.py "path": captures read from this folder
    http_parser: str = "auto"  # connections.HTTP_PARSERS: httptools where installed, else h11

    @property
    def replay(self) -> bool:
        return self.recorded_output is not None

    def validate(self) -> None:
        """ValueError with a user-facing message for settings that cannot work."""
        get_profile(self.profile)
        if self.replay and (self.reasoner or self.reasoner_url):
            raise ValueError("--reasoner-output replays a recorded answer; it cannot be combined with "
                             "--reasoner or --reasoner-url")
        if self.reasoner_url and not self.reasoner_model:
            raise ValueError("--reasoner-url needs --reasoner-model (the model name the endpoint serves)")
        if self.reasoner_model and not self.reasoner_url:
            raise ValueError("--reasoner-model names the model of a --reasoner-url endpoint; give the URL too")
        if self.reasoner_url and (self.reasoner or self.adapter):
            raise ValueError("with --reasoner-url the model and its adapter are loaded by the remote server; "
                             "drop --reasoner/--adapter")
        if not self.replay and not self.reasoner_url and not (self.reasoner or get_profile(self.profile).default_checkpoint):
            raise ValueError(f"profile {self.profile} has no published checkpoint; pass --reasoner with your model "
                             f"(hub id or folder)")
        if not 1 <= self.queue_size <= 10_000:
            raise ValueError("--queue-size must be between 1 and 10000")
        if not 0 < self.timeout_s <= 86_400 or not math.isfinite(self.timeout_s):
            raise ValueError("--timeout must be a positive number of seconds (at most a day)")
        if self.max_body_bytes < 1024:
            raise ValueError("--max-body-bytes must be at least 1024")
        if not 1 <= self.max_image_pixels <= MAX_IMAGE_PIXELS:
            raise ValueError(f"--max-image-pixels must be between 1 and {MAX_IMAGE_PIXELS}")
        if self.image_memory_bytes < 1024 * 1024:
            raise ValueError("--image-memory-mb must be at least 1")
        if not 1 <= self.max_decodes <= 64:
            raise ValueError("--max-decodes must be between 1 and 64")
        for flag, value in (("--header-timeout", self.header_timeout_s), ("--body-timeout", self.body_timeout_s),
                            ("--keep-alive", self.keep_alive_s)):
            if not math.isfinite(value) or not 0 < value <= 3600:
                raise ValueError(f"{flag} must be a positive number of seconds (at most an hour)")
        if not math.isfinite(self.shutdown_grace_s) or not 0 <= self.shutdown_grace_s <= 3600:
            raise ValueError("--shutdown-grace must be between 0 and 3600 seconds")
        if not 4 <= self.max_connections <= 100_000:
            raise ValueError("--max-connections must be between 4 and 100000")
        from .connections import HTTP_PARSERS

        if self.http_parser not in HTTP_PARSERS:
            raise ValueError(f"--http-parser must be one of {', '.join(HTTP_PARSERS)}")
        if self.shared_capture_dir is not None:
            import os

            if not os.path.isdir(self.shared_capture_dir):
                raise ValueError(f"--shared-capture-dir {self.shared_capture_dir} is not a folder; create it (the "
                                 f"plugin writes its captures there) or leave the option out")
            self.shared_capture_dir = os.path.realpath(self.shared_capture_dir)

    def reasoner_label(self) -> Optional[str]:
        if self.replay:
            return None
        if self.reasoner_url:
            from ..remote_reasoner import redact_url
            return f"{self.reasoner_model} at {redact_url(self.reasoner_url)}"
        name = self.reasoner or get_profile(self.profile).default_checkpoint
        return f"{name} + adapter {self.adapter}" if self.adapter else name
