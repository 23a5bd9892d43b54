"""Sentences from whole and streamed text, languages, language detection."""

import pytest

from wyoming_qwen_tts.request_text import (
    MAX_SENTENCE_CHARS,
    LanguageDetector,
    RequestText,
    SentenceSplitter,
    clean_text,
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


@pytest.mark.parametrize("text, spoken", [
    ("Sure! 😊 The lights are off. 👍🏽", "Sure! The lights are off."),
    ("Family: 👨\u200d👩\u200d👧 at home ❤️ now", "Family: at home now"),
    ("Null\x00 bell\x07 escape\x1b[0m done", "Null bell escape [0m done"),
    ("zero\u200bwidth, soft\u00adhyphen, \ufeffBOM, bidi\u202e", "zero width, soft hyphen, BOM, bidi"),
    ("lone \ud800 surrogate, private \ue000 use", "lone surrogate, private use"),
    ("It is 25 °C, or 77 ℉ ™", "It is 25 °C, or 77 ℉ ™"),  # letterlike symbols stay
])
def test_control_characters_and_emoji_are_not_spoken(text, spoken):
    assert clean_text(text) == spoken


def test_emoji_only_text_has_nothing_to_say():
    assert split_sentences("😀 🎉 ✅") == []


def test_mixed_scripts_stay_in_one_sentence():
    assert split_sentences("Hello 你好 Привет مرحبا.") == ["Hello 你好 Привет مرحبا."]


def test_request_text_keeps_the_first_max_chars_cut_between_words():
    text = RequestText(max_chars=30)
    sentences = text.add("The first sentence. The second one is cut here.") + text.finish()
    assert sentences == ["The first sentence.", "The second"]
    assert text.truncated and text.received == 47


def test_request_text_in_pieces_stops_at_the_limit_and_counts_the_rest():
    text = RequestText(max_chars=30)
    assert text.add("Twenty characters. Then") == ["Twenty characters."]
    assert not text.truncated
    assert text.add(" more text") == []
    assert text.add(" that is dropped.") == []
    assert text.finish() == ["Then more"]
    assert text.truncated and text.received == 23 + 10 + 17


def test_a_hundred_thousand_characters_become_at_most_max_chars_of_sentences():
    text = RequestText(max_chars=5000)
    sentences = text.add("This is a sentence of some length. " * 3000) + text.finish()
    assert text.received == 105000 and sum(map(len, sentences)) <= 5000
    whole, last = sentences[:-1], sentences[-1]
    assert len(whole) == 5000 // 35 and set(whole) == {"This is a sentence of some length."}
    assert "This is a sentence of some length.".startswith(last)


def test_ssml_tags_are_dropped_and_entities_decoded():
    text = RequestText(max_chars=1000, markup=True)
    ssml = '<speak>Tom &amp; Jerry.<break time="1s"/>It is <emphasis>very</emphasis> late.</speak>'
    assert text.add(ssml) + text.finish() == ["Tom & Jerry.", "It is very late."]


def test_ssml_is_recognised_by_its_look_and_tags_may_be_split_across_pieces():
    text = RequestText(max_chars=1000)
    pieces = ["  <speak><prosody ra", 'te="slow">Good ni', "ght &a", "mp; sleep well.</pros", "ody></speak>"]
    sentences = [sentence for piece in pieces for sentence in text.add(piece)] + text.finish()
    assert sentences == ["Good night & sleep well."]


def test_plain_text_with_angle_brackets_is_read_as_is():
    text = RequestText(max_chars=1000)
    assert text.add("If a < b and c > d, say so.") + text.finish() == ["If a < b and c > d, say so."]
    explicit = RequestText(max_chars=1000, markup=False)
    assert explicit.add("<speak>Hi</speak>") + explicit.finish() == ["<speak>Hi</speak>"]


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
