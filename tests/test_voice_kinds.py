"""Voice kinds: the registry (every kind recognised, every field owned once), custom voices in a voices
file, the config checks of the models a kind needs, and one preparation path for start-up and run time
(in-process, on the tiny Base and CustomVoice checkpoints)."""

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from wyoming_qwen_tts.__main__ import ConfigError, build_parser, check_config, usable_managed_voices
from wyoming_qwen_tts.voice_kinds import workshop
from wyoming_qwen_tts.voice_kinds.base import COMMON_FIELDS, MODEL_ROLES, VoiceSetupError
from wyoming_qwen_tts.voice_kinds.clone import CloneSpec
from wyoming_qwen_tts.voice_kinds.custom import CustomSpec
from wyoming_qwen_tts.voice_kinds.registry import KINDS, kind_of, owner_of, voice_fields
from wyoming_qwen_tts.voice_kinds.resources import Workshop
from wyoming_qwen_tts.voices import VoiceCatalog, VoicesFileError, load_voices_file

from .conftest import FIXTURES

REF = FIXTURES / "ref_16k_stereo.wav"
TINY_CUSTOM = FIXTURES / "tiny-custom"
ONE_OF_EACH = f"""
voices:
  alice:
    reference: {REF}
  narrator:
    design: A calm voice.
  announcer:
    design: A bright voice.
    mode: live
  vivian:
    speaker: Serena
    instructions: "cheerful, a little faster"
    language: en
    speed: 1.5
"""


def load(tmp_path: Path, text: str) -> VoiceCatalog:
    path = tmp_path / "voices.yaml"
    path.write_text(text)
    return load_voices_file(path)


# -- the registry ---------------------------------------------------------------------------------------


def test_every_kind_is_recognised_from_its_entry(tmp_path):
    catalog = load(tmp_path, ONE_OF_EACH)
    assert [spec.kind for spec in catalog.voices.values()] == ["clone", "frozen", "live", "custom"]
    assert [kind_of(spec).name for spec in catalog.voices.values()] == [kind.name for kind in KINDS]
    assert catalog.models_needed() == {"base", "design", "custom"}


def test_every_voices_file_field_is_owned_by_exactly_one_kind_or_common():
    owned = [field for kind in KINDS for field in kind.fields]
    assert len(owned) == len(set(owned)) and not set(owned) & COMMON_FIELDS
    assert voice_fields() == COMMON_FIELDS | set(owned)
    for kind in KINDS:
        assert all(owner_of(field) not in (None, kind) for field in kind.borrowed), kind.name
        assert kind.marker in kind.accepted and kind.models_needed <= set(MODEL_ROLES)
        assert kind.label and kind.speaks_with in kind.models_needed


@pytest.mark.parametrize("entry, field", [
    ("description: Nothing to speak with", "reference"),
    (f"reference: {REF}\n    speaker: ryan", "reference"),
    ("design: A voice.\n    speaker: ryan", "design"),
])
def test_an_entry_of_no_kind_or_of_two_is_a_clear_error(tmp_path, entry, field):
    with pytest.raises(VoicesFileError) as caught:
        load(tmp_path, f"voices:\n  bob:\n    {entry}\n")
    message = str(caught.value)
    assert f"voice 'bob': field {field!r}: give exactly one of 'reference' (a cloned voice), 'design'" in message
    assert "'speaker' (a custom voice" in message


# -- custom voices in a voices file -----------------------------------------------------------------------


def test_a_custom_voice_has_its_speaker_instructions_and_the_common_fields(tmp_path):
    vivian = load(tmp_path, ONE_OF_EACH).voices["vivian"]
    assert isinstance(vivian, CustomSpec)
    assert (vivian.speaker, vivian.instructions, vivian.language, vivian.speed) == (
        "Serena", "cheerful, a little faster", "english", 1.5)
    plain = load(tmp_path, "voices:\n  ryan:\n    speaker: ryan\n").voices["ryan"]
    assert (plain.instructions, plain.description, plain.language) == (None, "ryan", "auto")


@pytest.mark.parametrize("entry, field, problem", [
    ("speaker: ''", "speaker", "must be non-empty text"),
    ("speaker: 3", "speaker", "must be non-empty text"),
    ("speaker: ryan\n    instructions: ''", "instructions", "must be non-empty text"),
    ("speaker: ryan\n    instructions: [loud]", "instructions", "must be non-empty text"),
    ("speaker: ryan\n    seed: 3", "seed", "only for frozen voices"),
    ("speaker: ryan\n    transcript: Hi.", "transcript", "only for cloned voices"),
    ("design: A voice.\n    instructions: calm", "instructions", "only for custom voices (with 'speaker')"),
    (f"reference: {REF}\n    instructions: calm", "instructions", "only for custom voices"),
    ("speaker: ryan\n    style: calm", "style", "unknown field"),
])
def test_custom_voice_mistakes_name_the_file_the_voice_and_the_field(tmp_path, entry, field, problem):
    with pytest.raises(VoicesFileError) as caught:
        load(tmp_path, f"voices:\n  bob:\n    {entry}\n")
    assert f"{tmp_path / 'voices.yaml'}: voice 'bob': field {field!r}: {problem}" in str(caught.value)


# -- models a kind needs ---------------------------------------------------------------------------------


def config(tmp_path: Path, text: str, *options: str):
    voices = tmp_path / "voices.yaml"
    voices.write_text(text)
    return check_config(build_parser().parse_args(["--voices", str(voices), "--data-dir", str(tmp_path / "data"),
                                                   *options]))


def test_a_custom_voice_without_custom_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as caught:
        config(tmp_path, "voices:\n  ryan:\n    speaker: ryan\n")
    assert f"{tmp_path / 'voices.yaml'}: voice 'ryan': field 'speaker'" in str(caught.value)
    assert "needs the CustomVoice model, but --custom-model is not given" in str(caught.value)
    _, _, settings = config(tmp_path, "voices:\n  ryan:\n    speaker: ryan\n", "--custom-model", str(TINY_CUSTOM))
    assert settings.custom_model == str(TINY_CUSTOM) and settings.model_for("custom") == str(TINY_CUSTOM)


class ManagedVoices:
    def __init__(self, specs: dict) -> None:
        self.specs = specs

    def load(self) -> dict:
        return dict(self.specs)


def test_managed_voices_needing_a_model_not_configured_are_skipped_with_a_warning(tmp_path, caplog):
    _, _, settings = config(tmp_path, f"voices:\n  alice:\n    reference: {REF}\n", "--design-model", "none")
    store = ManagedVoices(load(tmp_path, ONE_OF_EACH).voices)
    with caplog.at_level(logging.WARNING):
        assert list(usable_managed_voices(store, settings)) == ["alice"]
    assert "Voice vivian (created over HTTP) is skipped" in caplog.text and "--custom-model" in caplog.text
    assert "Voice narrator (created over HTTP) is skipped" in caplog.text and "--design-model is none" in caplog.text


# -- one preparation path --------------------------------------------------------------------------------


@pytest.fixture
def custom_synthesizer(tmp_path, monkeypatch):
    """A synthesizer loaded in-process (tiny Base and CustomVoice) whose every voice preparation is recorded."""
    from wyoming_qwen_tts.synthesis import EngineSettings, Synthesizer

    prepared = []
    original = workshop.prepare_voice

    def recording(spec, shop):
        prepared.append(spec.name)
        return original(spec, shop)

    monkeypatch.setattr(workshop, "prepare_voice", recording)
    settings = EngineSettings(model=str(FIXTURES / "tiny-base"), design_model=str(FIXTURES / "tiny-design"),
                              custom_model=str(TINY_CUSTOM), data_dir=tmp_path / "data", device="cpu",
                              dtype="float32", max_batch=2)
    catalog = load(tmp_path, f"voices:\n  alice:\n    reference: {REF}\n  vivian:\n    speaker: Serena\n")
    synthesizer = Synthesizer.load(settings, catalog)
    try:
        yield synthesizer, prepared
    finally:
        synthesizer.close()


def test_start_up_and_run_time_prepare_voices_the_same_way(custom_synthesizer):
    synthesizer, prepared = custom_synthesizer
    assert prepared == ["alice", "vivian"]
    synthesizer.add_voice(CustomSpec(name="ryan", description="Ryan", speaker="ryan", instructions="calm"))
    synthesizer.add_voice(CloneSpec(name="bob", description="Bob", reference=REF))
    assert prepared == ["alice", "vivian", "ryan", "bob"]
    vivian, ryan = synthesizer.voices["vivian"], synthesizer.voices["ryan"]
    assert vivian.model is ryan.model and vivian.model.model_type == "custom_voice"
    assert (ryan.prompt.speaker, ryan.prompt.instruct) == ("ryan", "calm")
    assert synthesizer.voices["bob"].model is synthesizer.voices["alice"].model
    assert len(synthesizer.languages("vivian")) == 10
    # No voice needed the design model: it was never loaded.
    assert synthesizer._workshop.models.loaded("design") is None


def test_an_unknown_speaker_names_the_checkpoints_speakers(custom_synthesizer):
    synthesizer, _ = custom_synthesizer
    with pytest.raises(VoiceSetupError) as caught:
        synthesizer.add_voice(CustomSpec(name="vivian2", description="V", speaker="vivian"))
    assert "voice 'vivian2': field 'speaker': 'vivian' is not a speaker of" in str(caught.value)
    assert "aiden, dylan, eric, ryan, serena" in str(caught.value) and "vivian2" not in synthesizer.voices


def test_a_styled_custom_voice_speaks_with_the_requests_instructions(custom_synthesizer):
    synthesizer, _ = custom_synthesizer
    vivian = synthesizer.voices["vivian"]
    styled = synthesizer.styled_voice(vivian, "whispering")
    assert styled.model is vivian.model and styled.spec.name == "vivian"
    assert (styled.prompt.speaker, styled.prompt.instruct, vivian.prompt.instruct) == ("serena", "whispering", None)
    with pytest.raises(VoiceSetupError, match="'alice' is a cloned voice"):
        synthesizer.styled_voice(synthesizer.voices["alice"], "whispering")


def test_a_0b6_custom_voice_refuses_instructions_by_name_and_field(custom_0b6_tts):
    """The 0.6B CustomVoice takes no instructions: a voice's are a setup error naming the voice and
    the field, a request's an error naming the voice; blank ones are none, and no error."""
    shop = Workshop(SimpleNamespace(get=lambda role: custom_0b6_tts), cache=None)
    with pytest.raises(VoiceSetupError) as caught:
        workshop.prepare_voice(CustomSpec(name="vivian", description="V", speaker="Serena", instructions="calm"), shop)
    assert str(caught.value) == (f"voice 'vivian': field 'instructions': {custom_0b6_tts.checkpoint.path} is a 0.6B "
                                 "CustomVoice model, which takes no instructions; remove them, or use a 1.7B "
                                 "CustomVoice model (--custom-model)")
    vivian = workshop.prepare_voice(CustomSpec(name="vivian", description="V", speaker="Serena"), shop)
    assert (vivian.prompt.speaker, vivian.prompt.instruct) == ("serena", None)
    with pytest.raises(VoiceSetupError) as caught:
        kind_of(vivian.spec).styled(vivian, " whispering ", shop)
    assert str(caught.value) == ("voice 'vivian' is a built-in speaker of a 0.6B CustomVoice model, which takes no "
                                 "instructions: ask without them")
    assert kind_of(vivian.spec).styled(vivian, "  ", shop).prompt.instruct is None
