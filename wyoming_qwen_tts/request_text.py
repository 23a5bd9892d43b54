"""Text handling for the server: languages, sentence splitting, language detection.

No torch here: the protocol side must start (and reject a bad configuration) without loading the
engine. The ten language names are the engine's; Home Assistant gets them as ISO 639-1 codes.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Iterable
from html.parser import HTMLParser

import emoji
from sentence_stream import SentenceBoundaryDetector

from .engine.languages import AUTO, LANGUAGE_CODES, LANGUAGE_NAMES, normalize_language  # noqa: F401 (re-exported)
from .markdown_speech import MarkdownReader, Piece

_LOGGER = logging.getLogger(__name__)

# Longer "sentences" (no punctuation for paragraphs) are cut at clause or word boundaries so that
# one piece never approaches the engine's length cap and audio keeps flowing.
MAX_SENTENCE_CHARS = 300
_CLAUSE_BREAK = re.compile(r"(?<=[,;:\u2014\u2013\uff0c\u3001\uff1b\uff1a])\s*")
_WHITESPACE = re.compile(r"\s+")

# Not speech: controls, format marks (zero-width, bidi, soft hyphen, BOM), lone surrogates (JSON
# can carry them), private use and unassigned code points, and the replacement character (markdown
# puts it for a NUL). Each becomes a space.
_UNSPOKEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}
_REPLACEMENT_CHARACTER = "\ufffd"
# Emoji (the emoji package knows them, sequences and modifiers included) have no reading, except the
# single letterlike symbols before the arrows block that are emoji only in their coloured form: © ® ™.
# Nor have the other symbols ("So") of the arrows-to-dingbats blocks that are not emoji (★ ✓ ■ ♪).
_FIRST_PICTOGRAPH = 0x2190
_LAST_PICTOGRAPH = 0x2BFF

# Stands in for "*" inside the sentence splitter: a private-use code point, never spoken anyway.
_HIDDEN_ASTERISK = "\ue000"

# py3langid probabilities for a sentence it is unsure of are low; below this we let the model decide.
LANGUAGE_CONFIDENCE_FLOOR = 0.5


def language_codes(names: Iterable[str]) -> list[str]:
    """ISO 639-1 codes of the engine language names we know, in the order given, without duplicates."""
    return list(dict.fromkeys(LANGUAGE_CODES[name] for name in names if name in LANGUAGE_CODES))


def clean_text(text: str) -> str:
    """One line, single spaces, nothing unspeakable: line breaks from templates and LLM output are
    not pauses we want; control characters and emoji are not speech."""
    without_emoji = emoji.replace_emoji(text, _spoken_emoji)
    kept = "".join(" " if _is_unspoken(char) else char for char in without_emoji)
    return _WHITESPACE.sub(" ", kept).strip()


def _spoken_emoji(found: str, _data: dict) -> str:
    return found if len(found) == 1 and ord(found) < _FIRST_PICTOGRAPH else " "


def _is_unspoken(char: str) -> bool:
    category = unicodedata.category(char)
    if category == "So":
        return _FIRST_PICTOGRAPH <= ord(char) <= _LAST_PICTOGRAPH or char == _REPLACEMENT_CHARACTER
    return category in _UNSPOKEN_CATEGORIES


def is_speakable(text: str) -> bool:
    """True when the text has something to say: a letter or a digit, in any script."""
    return any(unicodedata.category(char)[0] in "LN" for char in text)


def split_long(sentence: str, max_chars: int = MAX_SENTENCE_CHARS) -> list[str]:
    """Pieces of at most max_chars, cut after clause punctuation if possible, else between words,
    else (scripts without spaces) anywhere."""
    if len(sentence) <= max_chars:
        return [sentence]
    pieces: list[str] = []
    rest = sentence
    while len(rest) > max_chars:
        window = rest[: max_chars + 1]
        cut = _last_break(window)
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return [piece for piece in pieces if piece]


def _last_break(window: str) -> int:
    clause_ends = [match.end() for match in _CLAUSE_BREAK.finditer(window) if 0 < match.end() < len(window)]
    if clause_ends and clause_ends[-1] > len(window) // 3:
        return clause_ends[-1]
    space = window.rfind(" ")
    if space > len(window) // 3:
        return space + 1
    return len(window) - 1


class SentenceSplitter:
    """Sentences from text that arrives in pieces, mid-word ("The weather", " today is sun", "ny. Tomorrow").

    Only speakable sentences come out, each at most MAX_SENTENCE_CHARS long. The splitter drops
    asterisks around words (*very*); keep_asterisks keeps them, for text whose markdown is read
    already (what is left is "5 * 3 * 2")."""

    def __init__(self, keep_asterisks: bool = False) -> None:
        self._detector = SentenceBoundaryDetector()
        self.keep_asterisks = keep_asterisks

    def add(self, chunk: str) -> list[str]:
        if self.keep_asterisks:
            chunk = chunk.replace("*", _HIDDEN_ASTERISK)
        return self._pieces(self._detector.add_chunk(chunk))

    def finish(self) -> list[str]:
        return self._pieces([self._detector.finish()])

    def _pieces(self, sentences: Iterable[str]) -> list[str]:
        if self.keep_asterisks:
            sentences = [sentence.replace(_HIDDEN_ASTERISK, "*") for sentence in sentences]
        return _speakable_pieces(sentences)


def split_sentences(text: str) -> list[str]:
    """The speakable sentences of a whole text."""
    splitter = SentenceSplitter()
    return splitter.add(text) + splitter.finish()


def _speakable_pieces(sentences: Iterable[str]) -> list[str]:
    pieces = []
    for sentence in sentences:
        cleaned = clean_text(sentence)
        if is_speakable(cleaned):
            pieces.extend(split_long(cleaned))
    return pieces


def looks_like_ssml(text: str) -> bool:
    return text.lstrip().startswith("<speak")


class MarkupStripper(HTMLParser):
    """The text of SSML (or any XML-like markup) fed in pieces: tags are dropped (each leaves a
    space), entities decoded; a tag or entity split across pieces waits for its end."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._text: list[str] = []

    def take(self, chunk: str) -> str:
        self.feed(chunk)
        return self._drain()

    def finish(self) -> str:
        self.close()
        return self._drain()

    def handle_data(self, data: str) -> None:
        self._text.append(data)

    def handle_starttag(self, tag: str, attrs) -> None:
        self._text.append(" ")

    def handle_endtag(self, tag: str) -> None:
        self._text.append(" ")

    def _drain(self) -> str:
        text, self._text = "".join(self._text), []
        return text


class RequestText:
    """One request's text as it arrives, whole or in pieces: the first max_chars characters are
    kept (cut between words), markup is dropped when the text is SSML (markup=None: SSML when it
    starts with <speak>), other text is read as markdown unless markdown=False (chat and LLM
    replies: see markdown_speech), and the speakable sentences come out as soon as they are complete."""

    def __init__(self, max_chars: int, markup: bool | None = None, markdown: bool = True) -> None:
        self.max_chars = max_chars
        self.received = 0  # characters received, kept or not
        self._markup = markup
        self._markdown = markdown
        self._stripper: MarkupStripper | None = None
        self._reader: MarkdownReader | None = None
        self._blank_start = ""  # whitespace received before any text, read as markdown
        self._splitter = SentenceSplitter()

    @property
    def truncated(self) -> bool:
        return self.received > self.max_chars

    def add(self, chunk: str) -> list[str]:
        kept = self._within_limit(chunk)
        if self._markup is None and kept.strip():
            self._markup = looks_like_ssml(kept)
        if self._markup:
            self._stripper = self._stripper or MarkupStripper()
            return self._splitter.add(self._stripper.take(kept))
        if self._markdown and self._reader is None and not kept.strip():
            self._blank_start += kept  # indentation is markdown: it waits for the first text
            return []
        if self._markdown:
            if self._reader is None:
                self._reader, self._splitter = MarkdownReader(), SentenceSplitter(keep_asterisks=True)
                kept, self._blank_start = self._blank_start + kept, ""
            return self._read_markdown(kept)
        return self._splitter.add(kept)

    def finish(self) -> list[str]:
        if self._reader:
            return self._read_markdown(None) + self._splitter.finish()
        tail = self._stripper.finish() if self._stripper else ""
        return self._splitter.add(tail) + self._splitter.finish()

    def _read_markdown(self, chunk: str | None) -> list[str]:
        """The sentences of a chunk (None: of the end) read as markdown. A bug in reading markdown must
        not cost the request its answer: the rest is then read as it is."""
        try:
            pieces = self._reader.finish() if chunk is None else self._reader.add(chunk)
        except Exception:
            _LOGGER.exception("Reading the text as markdown failed: reading the rest as it is")
            unsaid, self._reader, self._markdown = self._reader.unsaid, None, False
            self._splitter.keep_asterisks = False
            return self._splitter.add(unsaid)
        return self._sentences_of(pieces)

    def _sentences_of(self, pieces: list[Piece]) -> list[str]:
        sentences = []
        for piece in pieces:
            sentences += self._splitter.add(piece.text)
            if piece.ends_block:
                sentences += self._splitter.finish()
        return sentences

    def _within_limit(self, chunk: str) -> str:
        room = max(0, self.max_chars - self.received)
        self.received += len(chunk)
        if len(chunk) <= room:
            return chunk
        kept = chunk[:room]
        word_start = kept.rfind(" ")
        return kept[:word_start] if word_start > 0 and not chunk[room].isspace() else kept


class LanguageDetector:
    """py3langid restricted to the engine's ten languages; unsure means 'auto' (the model decides).

    The model (an npz, never a pickle) takes about a second to load: load() it at start-up."""

    def __init__(self, confidence_floor: float = LANGUAGE_CONFIDENCE_FLOOR) -> None:
        self.confidence_floor = confidence_floor
        self._identifier = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._identifier is None:
                from py3langid.langid import MODEL_FILE, LanguageIdentifier

                identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
                identifier.set_languages(sorted(LANGUAGE_NAMES))
                self._identifier = identifier

    def detect(self, text: str, allowed: Iterable[str] | None = None) -> str:
        """A language name, or 'auto' when unsure or when the guess is not among the allowed names."""
        if not is_speakable(text):
            return AUTO
        self.load()
        with self._lock:
            code, confidence = self._identifier.classify(text)
        name = LANGUAGE_NAMES.get(code, AUTO)
        if confidence < self.confidence_floor or (allowed is not None and name not in set(allowed)):
            _LOGGER.debug("Language of %r unsure (%s, %.2f): auto", text[:40], code, confidence)
            return AUTO
        return name
