"""Every limit, duration and catalogue the emulator enforces, in one frozen record.

`Settings` is built once by `Emulator.__init__` from its keyword arguments and validated
there; the rest of the emulator only reads it. Durations are stored as given (nominal
seconds) and converted with `Settings.scaled()`, so `time_scale` is applied in exactly one
place: the sliding window, the auto-cancel deadline and the starting/processing times all go
through it. Byte limits and the image-fetch timeout are *not* scaled: they are not part of the
service's clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Final

import attrs

MB: Final = 1024 * 1024

#: The aspect ratios the contract lists; `match_input_image` is only valid with `image_input`.
ASPECT_RATIOS: Final = frozenset(
    {"1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"}
)
MATCH_INPUT_IMAGE: Final = "match_input_image"
OUTPUT_FORMATS: Final = frozenset({"png", "jpg", "webp"})

#: A deliberately small word list: enough to produce NSFW_CONTENT_DETECTED by its real cause.
DEFAULT_NSFW_WORDS: Final = frozenset(
    {"nsfw", "nude", "nudity", "naked", "porn", "pornographic", "hentai", "explicit", "sexual"}
)

ProcessingTime = float | Callable[[str, str], float]


@attrs.frozen
class ModelSpec:
    """One model of the catalogue: its cost per output image and its minimum prompt length.

    >>> ModelSpec(cost=4, min_prompt=40)
    ModelSpec(cost=4, min_prompt=40)
    """

    cost: int
    min_prompt: int = 1


#: The models the emulator knows. The contract fixes only `google/nano-banana` (2 credits);
#: the other costs are the emulator's choice. `bfl/flux-1.1-pro-ultra` stands for the models
#: that "want 40 or more" characters of prompt.
DEFAULT_MODELS: Final[Mapping[str, ModelSpec]] = {
    "google/nano-banana": ModelSpec(cost=2),
    "google/imagen-4": ModelSpec(cost=4),
    "bfl/flux-schnell": ModelSpec(cost=1),
    "bfl/flux-dev": ModelSpec(cost=2),
    "bfl/flux-1.1-pro": ModelSpec(cost=4),
    "bfl/flux-1.1-pro-ultra": ModelSpec(cost=6, min_prompt=40),
    "bfl/flux-kontext-pro": ModelSpec(cost=4),
    "bytedance/seedream-4": ModelSpec(cost=3),
    "openai/gpt-image-1": ModelSpec(cost=8),
}


@attrs.frozen(kw_only=True)
class Settings:
    """The emulator's configuration; see `Emulator` for what each field means."""

    submissions: int = 10
    window: float = 60.0
    concurrent: int = 1
    generation_timeout: float = 50.0
    starting_time: float = 0.5
    processing_time: ProcessingTime = 3.0
    time_scale: float = 1.0
    max_image_bytes: int = 10 * MB
    max_total_image_bytes: int = 20 * MB
    image_fetch_timeout: float = 10.0
    models: Mapping[str, ModelSpec] = DEFAULT_MODELS
    nsfw_words: frozenset[str] = DEFAULT_NSFW_WORDS

    def __attrs_post_init__(self) -> None:
        positive = {
            "submissions": self.submissions,
            "window": self.window,
            "concurrent": self.concurrent,
            "generation_timeout": self.generation_timeout,
            "time_scale": self.time_scale,
            "max_image_bytes": self.max_image_bytes,
            "max_total_image_bytes": self.max_total_image_bytes,
            "image_fetch_timeout": self.image_fetch_timeout,
        }
        for name, value in positive.items():
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not self.starting_time >= 0:
            raise ValueError(f"starting_time must be >= 0, got {self.starting_time!r}")
        if not callable(self.processing_time) and not self.processing_time >= 0:
            raise ValueError(f"processing_time must be >= 0, got {self.processing_time!r}")
        for model, spec in self.models.items():
            if model.count("/") != 1 or spec.cost < 0:
                raise ValueError(f"bad model entry {model!r}: {spec!r}")

    def scaled(self, seconds: float) -> float:
        """A nominal duration on the emulator's (possibly compressed) clock."""
        return seconds * self.time_scale

    def processing_seconds(self, model: str, prompt: str) -> float:
        """The scaled processing time of one generation (the callable form may vary it)."""
        nominal = (
            self.processing_time(model, prompt)
            if callable(self.processing_time)
            else self.processing_time
        )
        return self.scaled(max(0.0, float(nominal)))

    def window_phrase(self) -> str:
        """How RATE_LIMIT_ERROR names the window: the seed's "minute" when it is one."""
        window = self.scaled(self.window)
        return "minute" if window == 60 else f"{window:g} seconds"
