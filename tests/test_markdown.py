"""LLM replies (markdown, links, lists, emoji) read as a person would read them, whole and streamed."""

import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from wyoming.event import Event
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

from benchmarks.text_bench import WEATHER
from wyoming_qwen_tts.speech import Limits
from wyoming_qwen_tts.markdown_speech import MarkdownReader, _GluedHeadings, hosts_for_urls
from wyoming_qwen_tts.request_text import RequestText, SentenceSplitter

from .standin import exchange, run

ISSUE_REPLY = WEATHER  # the reply issue 11 quotes, which the text benchmark times too

ISSUE_SPOKEN = ["Sure!", "Here is the weather for today:", "Morning: 12 °C and cloudy",
                "Afternoon: sunny, see the detailed forecast for more.", "Tips", "1. Take sunglasses with you.",
                "time: 9:00, temp: 12", "Have a great day!"]

REPLIES = [
    pytest.param(ISSUE_REPLY, ISSUE_SPOKEN, id="english-issue"),
    pytest.param("""To restart Home Assistant, run:

```bash
ha core restart
```

Then check the logs with `ha core logs`. If the `configuration.yaml` has errors, fix them first:

1. Open **Settings** → *System*.
2. Press **Restart**.
""", ["To restart Home Assistant, run:", "Then check the logs with ha core logs.",
      "If the configuration.yaml has errors, fix them first:", "1. Open Settings → System.", "2. Press Restart."],
        id="english-code"),
    pytest.param("""## Deine Termine für morgen

1. **9:00 Uhr** – Zahnarzt in der *Hauptstraße 5*.
2. **14:30 Uhr** – Meeting mit dem Team ([Details](https://kalender.example.de/termin/42)).

Vergiss nicht, den Schlüssel mitzunehmen! Mehr unter https://www.example.de/hilfe.""",
                 ["Deine Termine für morgen", "1. 9:00 Uhr – Zahnarzt in der Hauptstraße 5.",
                  "2. 14:30 Uhr – Meeting mit dem Team (Details).", "Vergiss nicht, den Schlüssel mitzunehmen!",
                  "Mehr unter example.de."], id="german"),
    pytest.param("""Voici la recette des **crêpes** :

* 250 g de farine
* 4 œufs
* ½ litre de lait

Mélangez le tout et laissez reposer *une heure*. Bon appétit !

```python
print("bon appétit")
```""", ["Voici la recette des crêpes :", "250 g de farine", "4 œufs", "½ litre de lait",
        "Mélangez le tout et laissez reposer une heure.", "Bon appétit !"], id="french"),
    pytest.param("""¡Claro! Las luces del **salón** están apagadas.

> Consejo: puedes decir _«enciende la luz»_ para encenderlas.

¿Necesitas algo más?""", ["¡Claro!", "Las luces del salón están apagadas.",
                         "Consejo: puedes decir «enciende la luz» para encenderlas.", "¿Necesitas algo más?"],
                 id="spanish"),
    pytest.param("""**好的！** 今天北京的天气：

- 上午：晴，**15°C**。
- 下午：多云，有小雨。

记得带伞。祝你愉快！🌂""", ["好的！", "今天北京的天气：", "上午：晴，15°C。", "下午：多云，有小雨。", "记得带伞。", "祝你愉快！"],
                 id="chinese"),
    pytest.param("""## 今日の予定

1. **10時**：会議
2. **12時**：ランチ（[お店の地図](https://maps.example.jp/shop)）

楽しい一日を！""", ["今日の予定", "1. 10時：会議", "2. 12時：ランチ（お店の地図）", "楽しい一日を！"], id="japanese"),
    pytest.param("""Certo! Ecco la lista della spesa:

- pane
- ~~latte~~ yogurt
- mele (vedi <https://www.esempio.it/offerte>)

---

Buona giornata!""", ["Certo!", "Ecco la lista della spesa:", "pane", "latte yogurt", "mele (vedi esempio.it)",
                    "Buona giornata!"], id="italian"),
    pytest.param("""Конечно! Вот **три** совета:

1. Пейте больше воды.
2. Спите *не меньше* восьми часов.
3. Гуляйте на свежем воздухе.

Подробнее: https://zdorovie.example.ru/sovety.""",
                 ["Конечно!", "Вот три совета:", "1. Пейте больше воды.", "2. Спите не меньше восьми часов.",
                  "3. Гуляйте на свежем воздухе.", "Подробнее: zdorovie.example.ru."], id="russian"),
    pytest.param("**네!** 거실 조명을 껐습니다. \n\n다른 도움이 필요하시면 말씀해 주세요. 😊",
                 ["네!", "거실 조명을 껐습니다.", "다른 도움이 필요하시면 말씀해 주세요."], id="korean"),
    pytest.param("""Previsão para amanhã
====================

![ícone de sol](https://example.com/sol.png) Sol com algumas nuvens, máxima de **28 °C**.

> Dica: use protetor solar.""", ["Previsão para amanhã", "Sol com algumas nuvens, máxima de 28 °C.",
                                 "Dica: use protetor solar."], id="portuguese"),
]


def spoken(text: str, **options) -> list[str]:
    request = RequestText(max_chars=100_000, **options)
    return request.add(text) + request.finish()


def spoken_in_chunks(chunks: list[str], **options) -> list[str]:
    request = RequestText(max_chars=100_000, **options)
    return [sentence for chunk in chunks for sentence in request.add(chunk)] + request.finish()


def chunked(text: str, sizes: list[int]) -> list[str]:
    """The text cut into pieces of the given sizes, repeated until it is used up."""
    chunks, start, turn = [], 0, 0
    while start < len(text):
        size = sizes[turn % len(sizes)]
        chunks.append(text[start:start + size])
        start, turn = start + size, turn + 1
    return chunks


# LLM deltas are a few characters; one-character pieces are the hardest case and come up too.
CHUNK_SIZES = st.lists(st.integers(min_value=1, max_value=24), min_size=1, max_size=40)
FEW_EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("reply, sentences", REPLIES)
def test_llm_replies_are_spoken_as_a_person_reads_them(reply, sentences):
    assert spoken(reply) == sentences


@pytest.mark.parametrize("reply, sentences", REPLIES)
def test_every_character_on_its_own_gives_the_same_sentences(reply, sentences):
    assert spoken_in_chunks(list(reply)) == sentences


@pytest.mark.parametrize("reply, sentences", REPLIES)
@FEW_EXAMPLES
@given(sizes=CHUNK_SIZES)
def test_random_chunkings_give_the_same_sentences_as_the_whole_reply(reply, sentences, sizes):
    assert spoken_in_chunks(chunked(reply, sizes)) == sentences


def test_markers_and_links_split_across_chunks_are_read_whole_and_a_sentence_is_not_held_back():
    request = RequestText(max_chars=1000)
    assert request.add("**Su") == []
    assert request.add("re!**") == []
    assert request.add(" Here is the ") == ["Sure!"]  # complete, and "Here" shows the next sentence began
    assert request.add("[fore") == []
    assert request.add("cast](https://ex") == []
    assert request.add("ample.com) for you. By") == ["Here is the forecast for you."]
    assert request.add("e") == []
    assert request.finish() == ["Bye"]


LONG_PARAGRAPHS = [
    # (paragraph, its first sentence, the start of its third sentence)
    ("**Good news:** the garage door is *closed* now. The `lights` in the [living room](https://home.example/lr) "
     "are off. The heating is set to 21 °C, and the windows are shut. Anything else?",
     "Good news: the garage door is closed now.", "The heating"),
    ("Guten Morgen! Heute wird es **sonnig** mit bis zu 24 °C. Am Nachmittag ziehen *einzelne* Wolken auf. "
     "Morgen regnet es.", "Guten Morgen!", "Am Nachmittag"),
    ("今天**天气**很好，最高气温二十四度。下午会有`一些`云。明天会下雨，记得带伞。", "今天天气很好，最高气温二十四度。", "明天"),
    ("Intro line.\n\n- **Kitchen:** the lights are on. The oven is *off*. The window is open.",
     "Kitchen: the lights are on.", "The window"),
]


@pytest.mark.parametrize("paragraph, first_sentence, third_start", LONG_PARAGRAPHS)
@FEW_EXAMPLES
@given(sizes=CHUNK_SIZES)
def test_the_first_sentence_of_a_long_paragraph_is_spoken_before_the_paragraph_ends(
        paragraph, first_sentence, third_start, sizes):
    """Fed up to where the third sentence starts, in any chunking, the first one is out."""
    before_third = paragraph[: paragraph.index(third_start)]
    request = RequestText(max_chars=1000)
    early = [sentence for chunk in chunked(before_third, sizes) for sentence in request.add(chunk)]
    assert first_sentence in early


@pytest.mark.parametrize("text, sentences", [
    ("3 * 4 = 12, and 5 * 3 = 15.", ["3 * 4 = 12, and 5 * 3 = 15."]),
    ("I write C# and C++ with snake_case names like my_var_name.",
     ["I write C# and C++ with snake_case names like my_var_name."]),
    ("The total is $4.99 (or 4,50 €) on 29.11.2026 at 10:30.",
     ["The total is $4.99 (or 4,50 €) on 29.11.2026 at 10:30."]),
    ("If a < b and c > d, say so.", ["If a < b and c > d, say so."]),
    ("Am 03.10.2026 ist Feiertag. Temperature: 20°C; humidity: 45%.",
     ["Am 03.10.2026 ist Feiertag.", "Temperature: 20°C; humidity: 45%."]),
    ("2 * 3 * 4 is 24 (*not* 10).", ["2 * 3 * 4 is 24 (not 10)."]),
    ("Good morning!\nThe weather today is sunny.\n\nTomorrow it will rain.",
     ["Good morning!", "The weather today is sunny.", "Tomorrow it will rain."]),
    ("    Indented text from a template is still read.", ["Indented text from a template is still read."]),
    ("The 2 + 2 = 4 rule - and the 10 - 3 = 7 one.", ["The 2 + 2 = 4 rule - and the 10 - 3 = 7 one."]),
    ("Rate: 5*3 = 15 at 10 a.m. tomorrow.", ["Rate: 5*3 = 15 at 10 a.m. tomorrow."]),
])
def test_plain_text_without_markdown_is_unchanged(text, sentences):
    assert spoken(text) == sentences
    assert spoken_in_chunks(list(text)) == sentences


PLAIN_PIECES = st.sampled_from([*"abcXYZ019 .,!?;:()$€%/+=-'\"°@\n", "Dr.", "Hello", " 5 * 3 ", "C#", "snake_case",
                                 "3.5", "今天", "。", "é"])
# What makes a line markdown although it has no markdown character: a list marker, a rule, an underline.
MARKDOWN_LINE = re.compile(r"\s*(?:[-+*]|\d{1,9}[.)])(?:\s|$)|\s*(?:=+|-+|[-*_ ]{3,})\s*$")


@settings(max_examples=150, deadline=None)
@given(text=st.lists(PLAIN_PIECES, min_size=1, max_size=30).map("".join))
def test_text_without_markdown_is_split_into_sentences_as_it_is(text):
    assume(not any(MARKDOWN_LINE.match(line) for line in text.split("\n")))
    splitter = SentenceSplitter(keep_asterisks=True)
    assert spoken(text) == splitter.add(text) + splitter.finish()


@pytest.mark.parametrize("ssml", [
    '<speak>Tom &amp; Jerry.<break time="1s"/>It is <emphasis>very</emphasis> late.</speak>',
    "<speak>See [the docs](https://example.com/docs) and `code`.</speak>",
])
def test_ssml_keeps_its_own_handling(ssml):
    assert spoken(ssml) == spoken(ssml, markdown=False)
    assert spoken(ssml, markup=True) == spoken(ssml, markup=True, markdown=False)


def test_ssml_is_not_read_as_markdown():
    assert spoken("<speak>See [the docs](https://example.com/docs).</speak>") == [
        "See [the docs](https://example.com/docs)."]


@pytest.mark.parametrize("text, sentences", [
    ("See https://weather.example.com/today?city=berlin for details.", ["See weather.example.com for details."]),
    ("Docs: <https://www.home-assistant.io/docs/>.", ["Docs: home-assistant.io."]),
    ("Go to www.example.org/path, then log in.", ["Go to example.org, then log in."]),
    ("[https://example.com/a](https://example.com/a)", ["example.com"]),
    ("Read the [manual](https://example.com/manual.pdf).", ["Read the manual."]),
    ("Call `http://192.168.1.10:8123/lovelace` now.", ["Call 192.168.1.10 now."]),
])
def test_links_are_read_as_their_text_and_bare_urls_as_their_host(text, sentences):
    assert spoken(text) == sentences


def test_a_url_is_never_spelled_even_at_the_end_of_a_sentence():
    assert hosts_for_urls("(see https://a.example.com/x?y=1).") == "(see a.example.com)."
    assert hosts_for_urls("https://a.example.com/x, and www.b.example.com.") == "a.example.com, and b.example.com."


@pytest.mark.parametrize("text, sentences", [
    ("# Title\nText here.", ["Title", "Text here."]),
    ("Done:\n\n```python\nprint('x')\n```\n\n~~~\nmore code\n~~~\nBye.", ["Done:", "Bye."]),
    ("Unclosed:\n```\ncode until the end", ["Unclosed:"]),
    ("- Lights\n  - Kitchen: on\n  - Hall: off\n- Doors: locked", ["Lights", "Kitchen: on", "Hall: off",
                                                                  "Doors: locked"]),
    ("3. Oktober ist ein Feiertag.", ["3. Oktober ist ein Feiertag."]),
    ("| Day | High |\n|---|---|\n| Mon | 21 °C |\n| Tue | |", ["Day: Mon, High: 21 °C", "Day: Tue"]),
    ("> Quoted *advice*.\n\n***\n\nAfter the rule.", ["Quoted advice.", "After the rule."]),
    ("- ✅ Lights off\n- ❌ Door open 🚪", ["Lights off", "Door open"]),
    ("Rated ★★★★☆ by 👩🏽\u200d💻 users ✓", ["Rated by users"]),
    ("Null\x00 bell\x07 **bold** \ufeffzero\u200bwidth.", ["Null bell bold zero width."]),
    ("A line with two spaces  \nand a hard break.", ["A line with two spaces and a hard break."]),
])
def test_markdown_structures(text, sentences):
    assert spoken(text) == sentences


GLUED_HEADINGS = [
    ("Of course! ## Dinner plan\n- pasta\n- salad", ["Of course!", "Dinner plan", "pasta", "salad"]),
    ("Sure. # Plan\nCook at six.", ["Sure.", "Plan", "Cook at six."]),
    ("**Done.** ### Next steps\nCall me.", ["Done.", "Next steps", "Call me."]),
    ("Wow!!! ## Big news\nIt works.", ["Wow!!!", "Big news", "It works."]),
    ("好的。## 晚餐\n- 面条", ["好的。", "晚餐", "面条"]),
    ("Here it is. ## Plan A\nStep one. ## Plan B\nStep two.", ["Here it is.", "Plan A", "Step one.", "Plan B",
                                                                "Step two."]),
]
# A '#' that is no heading marker is kept as it is: no sentence end before it, no space after it, more
# than six, or in code (an inline code span, a code block) or a table row.
HASH_LOOKALIKES = [
    ("Use #hashtags. C# is fine. See issue #12. Count the # of items.",
     ["Use #hashtags.", "C# is fine.", "See issue #12.", "Count the # of items."]),
    ("Done! #12 is next.", ["Done! #12 is next."]),
    ("Hm. ####### seven", ["Hm. ####### seven"]),
    ("Run `echo hi. ## not a heading` now.", ["Run echo hi. ## not a heading now."]),
    ("```\nx = 1. ## comment\n```\nEnd.", ["End."]),
    ("| Step | Note |\n|---|---|\n| One | Go. ## fast |", ["Step: One, Note: Go. ## fast"]),
    ("It ends. ##", ["It ends. ##"]),
]


@pytest.mark.parametrize("text, sentences", GLUED_HEADINGS + HASH_LOOKALIKES)
def test_a_heading_marker_that_lost_its_line_break_is_a_pause_and_look_alikes_are_kept(text, sentences):
    assert spoken(text) == sentences
    assert spoken_in_chunks(list(text)) == sentences


@pytest.mark.parametrize("text, sentences", GLUED_HEADINGS + HASH_LOOKALIKES)
@FEW_EXAMPLES
@given(sizes=CHUNK_SIZES)
def test_glued_heading_markers_read_the_same_in_any_chunking(text, sentences, sizes):
    assert spoken_in_chunks(chunked(text, sizes)) == sentences


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(st.sampled_from(["!", ".", "?", "。", " ", "  ", "\t", "#", "##", "#######", "a", "Bb", "`",
                                        "|", "\n", ")", "**", "> ", "x" * 3]), max_size=40),
       sizes=CHUNK_SIZES)
def test_glued_heading_markers_are_found_the_same_in_any_chunking(pieces, sizes):
    text = "".join(pieces)
    whole = _GluedHeadings().feed(text, final=True)
    streamed = _GluedHeadings()
    assert "".join(streamed.feed(chunk) for chunk in chunked(text, sizes)) + streamed.feed("", final=True) == whole


def test_the_switch_off_reads_the_text_as_it_is():
    plain = spoken(ISSUE_REPLY, markdown=False)
    assert any("https://weather.example.com/today?city=berlin" in sentence for sentence in plain)
    assert "### Tips 1." in plain


def test_a_reader_can_be_used_again_after_finish():
    reader = MarkdownReader()
    first = reader.add("**One.**") + reader.finish()
    second = reader.add("- Two") + reader.finish()
    assert [piece.text for piece in first + second if piece.text] == ["One.", "Two"]


def test_the_handler_speaks_a_streamed_markdown_reply_sentence_by_sentence():
    async def scenario(server, speaker):
        chunks = [SynthesizeChunk(text=piece).event() for piece in chunked(ISSUE_REPLY, [3, 7, 1, 12])]
        await exchange(server, SynthesizeStart().event(), *chunks, SynthesizeStop().event(),
                       last="synthesize-stopped")
        await exchange(server, Synthesize(text="**Done.** See [the log](https://example.com/log).").event())
        return [text for _, text, _ in speaker.said]

    assert run(scenario) == ISSUE_SPOKEN + ["Done.", "See the log."]


def test_the_handler_reads_text_as_it_is_when_markdown_is_off():
    async def scenario(server, speaker):
        await exchange(server, Event("synthesize", {"text": "See [the log](https://example.com/log).",
                                                    "text_format": "text"}))
        return [text for _, text, _ in speaker.said]

    assert run(scenario, Limits(markdown=False)) == ["See [the log](https://example.com/log)."]


def test_the_server_option_and_its_environment_variable_turn_markdown_off(monkeypatch):
    from wyoming_qwen_tts.__main__ import build_parser, limits_of

    assert limits_of(build_parser().parse_args([])).markdown is True
    assert limits_of(build_parser().parse_args(["--no-markdown"])).markdown is False
    monkeypatch.setenv("QWEN_TTS_NO_MARKDOWN", "true")
    assert limits_of(build_parser().parse_args([])).markdown is False


def test_a_failure_reading_markdown_still_speaks_the_rest_as_it_is(monkeypatch, caplog):
    request = RequestText(max_chars=1000)
    assert request.add("**First** sentence. Then") == ["First sentence."]

    def broken(self, chunk):
        self._pending += chunk
        raise RuntimeError("a bug")

    monkeypatch.setattr(MarkdownReader, "add", broken)
    assert request.add(" the *rest*.") == ["Then the rest."]  # nothing lost, nothing said twice
    assert request.add(" More.") == []
    assert request.finish() == ["More."]
    assert "Reading the text as markdown failed" in caplog.text


@pytest.mark.parametrize("chunks", [
    ["Line one\r\nline two.\r\n\r\n- Next\r\n- Last"],
    ["Line one\r", "\nline two.\r", "\n\r", "\n- Next\r", "\n- Last"],
    ["Line one\rline two.\r\r- Next\r- Last"],
])
def test_carriage_returns_end_lines_as_line_feeds_do(chunks):
    assert spoken_in_chunks(chunks) == ["Line one line two.", "Next", "Last"]


def test_other_line_separators_do_not_end_a_paragraph():
    text = "One\x0ctwo\u2028three\x85four.\nFive."
    assert spoken_in_chunks(list(text)) == spoken(text) == ["One two three four.", "Five."]


LONG_REPLIES = [
    pytest.param("Your shopping list:\n\n" + "".join(f"{i}. Item number {i} is **here**.\n" for i in range(1, 61))
                 + "\nThat is all.", id="long-ordered-list"),
    pytest.param("| hour | temp |\n|---|---|\n" + "".join(f"| {h}:00 | {h % 7 + 10} °C |\n" for h in range(40))
                 + "\nHave a nice day.", id="long-table"),
    pytest.param(" ".join(f"Sentence {i} has *some* `code` and a [link](https://x.example/{i})." for i in range(60))
                 + "\n- an item after it\n\nThe end.", id="long-paragraph"),
    pytest.param("\n".join(f"> Quoted line {i} with **bold** text." for i in range(80)) + "\n\nAfter.",
                 id="long-quote"),
]


@pytest.mark.parametrize("reply", LONG_REPLIES)
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=CHUNK_SIZES)
def test_long_replies_give_the_same_sentences_in_any_chunking(reply, sizes):
    whole = spoken(reply)
    assert spoken_in_chunks(chunked(reply, sizes)) == whole


def test_a_long_list_and_table_are_read_item_by_item_and_row_by_row():
    items = spoken(LONG_REPLIES[0].values[0])
    assert items[0] == "Your shopping list:" and items[-1] == "That is all."
    assert items[1:-1] == [f"{i}. Item number {i} is here." for i in range(1, 61)]
    rows = spoken(LONG_REPLIES[1].values[0])
    assert rows[:-1] == [f"hour: {h}:00, temp: {h % 7 + 10} °C" for h in range(40)] and rows[-1] == "Have a nice day."


@pytest.mark.parametrize("text", [
    "[" * 1500, "*a " * 500, "**a " * 400, "> a *b\n" * 200, "- " * 700, "_a_b " * 300, "[x](" * 400,
    "".join("  " * depth + "- a\n" for depth in range(40)), "`a " * 500, "| a |\n|---|\n" + "| 1 |\n" * 200,
])
def test_odd_markdown_reads_the_same_streamed_as_whole(text):
    assert spoken_in_chunks(chunked(text, [7])) == spoken(text)


def test_leading_indentation_sent_alone_still_counts_as_markdown():
    text = "  - Hello\n   *"
    assert spoken_in_chunks(list(text)) == spoken(text) == ["Hello"]
