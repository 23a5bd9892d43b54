"""Live designed voices: a description the VoiceDesign model speaks anew on every request (no
rendering, no cache; every sentence may sound a little different).

    announcer:
      design: "A bright, clear announcer"
      mode: live
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .base import ReadyVoice, VoiceKind, VoiceSpec, Where
from .frozen import design_text

if TYPE_CHECKING:
    from .resources import Workshop


@dataclass(frozen=True, kw_only=True)
class LiveSpec(VoiceSpec):
    kind = "live"
    design: str  # the description the design model speaks with


class LiveKind(VoiceKind):
    name = "live"
    label = "designed, live"
    marker = "design"
    marker_meaning = "a designed voice"
    fields = frozenset()
    borrowed = frozenset({"design", "mode"})  # frozen.py owns and checks them
    speaks_with = "design"

    def recognises(self, entry: dict) -> bool:
        return "design" in entry and entry.get("mode") == "live"

    def parse(self, entry: dict, common: dict[str, Any], where: Where) -> LiveSpec:
        return LiveSpec(**common, design=design_text(entry, where))

    def prepare(self, spec: LiveSpec, workshop: Workshop) -> ReadyVoice:
        return designed_voice(spec, workshop)


KIND = LiveKind()


def designed_voice(spec: LiveSpec, workshop: Workshop) -> ReadyVoice:
    """The VoiceDesign model speaking as the spec describes; also a request's voice from its instructions."""
    design = workshop.models.get("design")
    return ReadyVoice(spec, design.design_voice(spec.design), design)
