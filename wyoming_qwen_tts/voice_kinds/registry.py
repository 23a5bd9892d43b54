"""Every voice kind, and how an entry or a request finds its kind. To add a kind: write its module
(a VoiceSpec subclass and a VoiceKind) and list it in KINDS."""

from __future__ import annotations

from . import clone, custom, frozen, live
from .base import COMMON_FIELDS, VoiceKind, VoiceSpec, Where

# In this order the "give exactly one of" message lists them, and an entry that matches none is
# reported against the first one's marker.
KINDS: tuple[VoiceKind, ...] = (clone.KIND, frozen.KIND, live.KIND, custom.KIND)
BY_NAME = {kind.name: kind for kind in KINDS}


def kind_of(spec: VoiceSpec) -> VoiceKind:
    return BY_NAME[spec.kind]


def voice_fields() -> frozenset[str]:
    """Every field a voices-file entry may have."""
    return COMMON_FIELDS.union(*(kind.fields for kind in KINDS))


def owner_of(field: str) -> VoiceKind | None:
    """The kind that owns a field; None for a common field."""
    return next((kind for kind in KINDS if field in kind.fields), None)


def kind_for_entry(entry: dict, where: Where) -> VoiceKind:
    """The one kind that recognises a voices-file entry; raises VoicesFileError for none or several."""
    matches = [kind for kind in KINDS if kind.recognises(entry)]
    if len(matches) != 1:
        field = (matches or KINDS)[0].marker
        raise where.error(field, f"give exactly one of {_markers()}")
    kind = matches[0]
    for field in entry:
        owner = owner_of(field)
        if owner is not None and field not in kind.accepted:
            raise where.error(field, owner.misplaced(field))
    return kind


def kind_for_request(body: dict) -> VoiceKind | None:
    """The kind a voice creation request (JSON) asks for, by its marker field; None when it names none
    or several."""
    matches = [kind for kind in KINDS if kind.request_marker is not None and kind.request_marker in body]
    return matches[0] if len(matches) == 1 else None


def creatable() -> list[VoiceKind]:
    return [kind for kind in KINDS if kind.creation is not None]


def _markers() -> str:
    meanings = {kind.marker: kind.marker_meaning for kind in KINDS}
    described = [f"{marker!r} ({meaning})" for marker, meaning in meanings.items()]
    return ", ".join(described[:-1]) + " or " + described[-1]
