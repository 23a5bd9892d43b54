"""The voices file: parsing, validation messages, defaults, cache keys, what Home Assistant sees."""

from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from wyoming_qwen_tts.voice_kinds.clone import clone_prompt_key
from wyoming_qwen_tts.voice_kinds.frozen import RENDER_SENTENCES, frozen_prompt_key, render_key
from wyoming_qwen_tts.voices import (
    BUILTIN_DEFAULT,
    VoicesFileError,
    builtin_catalog,
    load_voices_file,
    parse_voices,
    tts_voices,
)

from .conftest import FIXTURES

EXAMPLE = """
default: narrator
voices:
  alice:
    description: Alice (warm, clear)
    reference: ref.wav
    transcript: "What is said in ref.wav"
    language: EN
    speed: 1.25
  bob:
    reference: {absolute}
  narrator:
    description: Narrator (designed)
    design: "A deep male voice with a calm, authoritative presence"
  announcer:
    design: "A bright, clear announcer"
    mode: live
    language: de
"""


@pytest.fixture
def voices_dir(tmp_path) -> Path:
    (tmp_path / "ref.wav").write_bytes((FIXTURES / "ref_16k_stereo.wav").read_bytes())
    return tmp_path


def load(voices_dir: Path, text: str):
    path = voices_dir / "voices.yaml"
    path.write_text(text)
    return load_voices_file(path)


def test_example_file_parses_into_voice_specs(voices_dir):
    catalog = load(voices_dir, EXAMPLE.format(absolute=FIXTURES / "ref_16k_stereo.wav"))
    assert catalog.names == ["alice", "bob", "narrator", "announcer"] and catalog.default == "narrator"
    alice, bob, narrator, announcer = catalog.voices.values()
    assert alice.kind == "clone" and alice.reference == (voices_dir / "ref.wav").resolve()
    assert (alice.transcript, alice.language, alice.speed) == ("What is said in ref.wav", "english", 1.25)
    assert bob.kind == "clone" and bob.transcript is None and bob.description == "bob" and bob.language == "auto"
    assert narrator.kind == "frozen" and narrator.render_language == "english"
    assert narrator.render_sentence == RENDER_SENTENCES["english"]
    assert announcer.kind == "live" and announcer.language == "german"
    assert catalog.needs_design_model() and catalog.live_voices() == [announcer]


def test_default_is_the_first_voice_unless_named(voices_dir):
    catalog = load(voices_dir, "voices:\n  one:\n    design: A.\n  two:\n    design: B.\n")
    assert catalog.default == "one"
    assert catalog.with_default("two").default == "two"
    with pytest.raises(VoicesFileError, match="default voice 'three' is not in .*voices.yaml"):
        catalog.with_default("three")


def test_resolve_falls_back_to_the_default_voice():
    catalog = builtin_catalog()
    assert catalog.resolve("leo") == (catalog.voices["leo"], True)
    assert catalog.resolve(None) == (catalog.voices[BUILTIN_DEFAULT], True)
    assert catalog.resolve("nobody") == (catalog.voices[BUILTIN_DEFAULT], False)


def test_builtin_voices_are_two_female_two_male_frozen_designs():
    catalog = builtin_catalog()
    assert catalog.source is None and len(catalog.voices) == 4
    assert all(spec.kind == "frozen" and spec.design for spec in catalog.voices.values())
    descriptions = " ".join(spec.design for spec in catalog.voices.values())
    assert descriptions.count("female") == 2 and descriptions.count(" male") == 2


@pytest.mark.parametrize("text, message", [
    ("- just\n- a list\n", "expected a mapping with 'voices'"),
    ("voices: {}\n", "field 'voices'"),
    ("voice:\n  a:\n    design: x\n", "unknown top-level field 'voice'"),
    ("default: zed\nvoices:\n  a:\n    design: x\n", "field 'default': 'zed' is not one of the voices"),
    ("voices:\n  'bad name!':\n    design: x\n", "voice name 'bad name!'"),
    ("voices:\n  a: just text\n", "voice 'a': expected a mapping of fields"),
    ("voices:\n  a:\n    design: ''\n", "voice 'a': field 'design': must be non-empty text"),
    ("voices:\n  a:\n    design: x\n    transcript: hi\n", "field 'transcript': only for cloned voices"),
    ("voices:\n  a:\n    reference: ref.wav\n    mode: live\n", "field 'mode': only for designed voices"),
    ("voices:\n  a:\n    design: x\n    mode: live\n    seed: 3\n", "field 'seed': only for frozen voices"),
    ("voices:\n  a:\n    design: x\n    seed: -1\n", "field 'seed': must be a non-negative integer"),
    ("voices:\n  a:\n    design: x\n    seed: 4294967296\n", "up to 4294967295"),
    ("voices:\n  a:\n    design: x\n    speed: fast\n", "field 'speed': must be a number from 0.25 to 4.0"),
    ("voices:\n  a:\n    design: x\n    speed: 0.1\n", "field 'speed'"),
    ("voices:\n  a:\n    design: x\n    language: 3\n", "field 'language': must be text"),
    ("voices:\n  a:\n    reference: ref.wav\n    design: x\n", "field 'reference': give exactly one of"),
])
def test_mistakes_name_the_file_the_voice_and_the_field(voices_dir, text, message):
    with pytest.raises(VoicesFileError) as caught:
        load(voices_dir, text)
    assert str(voices_dir / "voices.yaml") in str(caught.value)
    assert message in str(caught.value)


def test_unreadable_files_are_reported_with_their_path(tmp_path):
    with pytest.raises(VoicesFileError, match="does not exist"):
        load_voices_file(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("voices: [unclosed\n")
    with pytest.raises(VoicesFileError, match=f"{broken} is not valid YAML"):
        load_voices_file(broken)


def test_yaml_is_loaded_safely(voices_dir):
    with pytest.raises(VoicesFileError, match="not valid YAML"):
        load(voices_dir, "voices: !!python/object/apply:os.system ['true']\n")


def test_frozen_cache_keys_change_with_every_input(voices_dir):
    narrator = builtin_catalog().voices["james"]
    key = frozen_prompt_key(narrator, "design-a", "base-a")
    assert key == frozen_prompt_key(narrator, "design-a", "base-a")
    changed = [
        frozen_prompt_key(replace(narrator, design="Another voice"), "design-a", "base-a"),
        frozen_prompt_key(replace(narrator, language="german"), "design-a", "base-a"),
        frozen_prompt_key(replace(narrator, seed=narrator.seed + 1), "design-a", "base-a"),
        frozen_prompt_key(narrator, "design-b", "base-a"),
        frozen_prompt_key(narrator, "design-a", "base-b"),
    ]
    assert len({key, *changed}) == 6
    # The rendering does not depend on the Base model: switching Base reuses it.
    assert render_key(narrator, "design-a") == render_key(narrator, "design-a")
    # Speed and description are applied at synthesis time; they do not invalidate the cache.
    assert frozen_prompt_key(replace(narrator, speed=2.0, description="x"), "design-a", "base-a") == key


def test_clone_cache_key_follows_the_audio_content_not_its_name(voices_dir):
    same_audio_elsewhere = FIXTURES / "ref_16k_stereo.wav"
    catalog = load(voices_dir, f"voices:\n  a:\n    reference: ref.wav\n  b:\n    reference: {same_audio_elsewhere}\n"
                               "  c:\n    reference: ref.wav\n    transcript: Hello.\n")
    a, b, c = catalog.voices.values()
    assert clone_prompt_key(a, "base") == clone_prompt_key(b, "base")
    assert clone_prompt_key(a, "base") != clone_prompt_key(c, "base") != clone_prompt_key(c, "other-base")


def test_model_paths_are_keyed_by_location(tmp_path, monkeypatch):
    narrator = builtin_catalog().voices["clara"]
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    assert render_key(narrator, "model") == render_key(narrator, str(tmp_path / "model"))


def test_info_voices_carry_descriptions_and_language_codes():
    catalog = builtin_catalog()
    languages = {"clara": ["english", "german"], "maya": ["chinese"], "james": ["english", "cantonese"], "leo": []}
    voices = tts_voices(catalog, languages.__getitem__)
    assert [(voice.name, voice.languages) for voice in voices] == [
        ("clara", ["en", "de"]), ("maya", ["zh"]), ("james", ["en"]), ("leo", [])]
    assert all(voice.installed and voice.attribution.name == "Qwen" for voice in voices)
    assert voices[0].description == "Clara (warm female, designed)"


def test_parse_rejects_non_string_voice_names():
    with pytest.raises(VoicesFileError, match="voice name 3"):
        parse_voices(yaml.safe_load("voices:\n  3:\n    design: x\n"), Path("v.yaml"))
