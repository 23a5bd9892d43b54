"""Sentences from whole and streamed text, languages, language detection."""

import pytest

from wyoming_qwen_tts.text import (
    MAX_SENTENCE_CHARS,
    LanguageDetector,
    SentenceSplitter,
    is_speakable,
    language_codes,
    normalize_language,
    split_long,
    split_sentences,
)


@pytest.mark.parametrize("value, name", [
    (None, "auto"), ("", "auto"), ("Auto", "auto"), ("en", "english"), ("EN-us", "english"), ("de_DE", "german"),
    ("German", "german"), ("zh", "chinese"), ("pt-BR", "portuguese"), (" it ", "italian"),
])
def test_normalize_language_accepts_names_and_codes(value, name):
    assert normalize_language(value) == name


@pytest.mark.parametrize("value", ["klingon", "xx", "english-ish"])
def test_normalize_language_rejects_unknown_languages(value):
    with pytest.raises(ValueError, match="unknown language"):
        normalize_language(value)


def test_language_codes_are_iso_639_1_and_skip_what_we_do_not_know():
    assert language_codes(["english", "chinese", "beijing_dialect", "english"]) == ["en", "zh"]


def test_split_sentences_of_a_whole_text():
    text = "Good morning! The weather today is sunny.\nTomorrow it will rain... Bring an umbrella?"
    assert split_sentences(text) == ["Good morning!", "The weather today is sunny.", "Tomorrow it will rain...",
                                     "Bring an umbrella?"]


def test_streamed_chunks_yield_each_sentence_as_soon_as_it_is_complete():
    splitter = SentenceSplitter()
    assert splitter.add("The weather") == []
    assert splitter.add(" today is sun") == []
    assert splitter.add("ny. Tomorrow it") == ["The weather today is sunny."]
    assert splitter.add(" will rain") == []
    assert splitter.add(".") == []
    assert splitter.finish() == ["Tomorrow it will rain."]


def test_chinese_sentences_split_without_spaces():
    assert split_sentences("今天天气很好。明天会下雨。") == ["今天天气很好。", "明天会下雨。"]


@pytest.mark.parametrize("text", ["", "   ", "...", "!?—", "* * *", "\n\n"])
def test_nothing_speakable_yields_no_sentences(text):
    assert not is_speakable(text) and split_sentences(text) == []


def test_speakable_means_a_letter_or_digit_in_any_script():
    assert is_speakable("42") and is_speakable("你好") and is_speakable("¿Sí?") and not is_speakable("¿?")


def test_markdown_emphasis_and_line_breaks_are_not_spoken():
    assert split_sentences("It is **very** warm\ntoday.") == ["It is very warm today."]


def test_long_sentences_are_cut_at_clauses_then_words():
    clauses = ", ".join(f"clause number {i} has a few words" for i in range(30)) + "."
    pieces = split_long(clauses)
    assert len(pieces) > 1 and all(len(piece) <= MAX_SENTENCE_CHARS for piece in pieces)
    assert all(piece.endswith(",") for piece in pieces[:-1])
    assert " ".join(pieces) == clauses
    words = " ".join(["word"] * 200)
    assert " ".join(split_long(words)) == words
    unspaced = "字" * 700
    assert "".join(split_long(unspaced)) == unspaced and max(map(len, split_long(unspaced))) <= MAX_SENTENCE_CHARS


@pytest.fixture(scope="module")
def detector():
    detector = LanguageDetector()
    detector.load()
    return detector


@pytest.mark.parametrize("sentence, language", [
    ("The weather today is sunny and warm.", "english"),
    ("Guten Morgen, wie geht es Ihnen heute?", "german"),
    ("今天天气很好，我们去公园散步吧。", "chinese"),
    ("Привет, как у тебя дела сегодня?", "russian"),
    ("こんにちは、今日はいい天気ですね。", "japanese"),
    ("Hola, ¿cómo estás? Hace mucho calor hoy.", "spanish"),
])
def test_detection_finds_clear_languages(detector, sentence, language):
    assert detector.detect(sentence) == language


def test_unsure_or_unspeakable_text_is_left_to_the_model(detector):
    assert detector.detect("OK.") == "auto"
    assert detector.detect("12:30") == "auto"
    assert detector.detect("...") == "auto"


def test_detection_is_restricted_to_the_languages_a_voice_speaks(detector):
    assert detector.detect("Guten Morgen, wie geht es Ihnen heute?", allowed=["english"]) == "auto"
    assert detector.detect("Guten Morgen, wie geht es Ihnen heute?", allowed=["german", "english"]) == "german"
