"""Speech-ready text from markdown and chat output (LLM replies), as it streams in.

markdown-it parses; this module decides what a listener hears: emphasis markers are dropped, each
heading, list item, paragraph and table row is its own block (the sentence splitter ends its last
sentence there, a pause instead of a "hash" or a dash), links are read as their text, bare URLs as
their host, inline code as text, code blocks are skipped (see the README). No torch here.

Streaming: a block's text is said when the block is closed (a later line shows it cannot go on), and
the open paragraph is said early in fragments cut before a space (or after a CJK full stop) where no
markdown construct is open (`**`, backticks, `[...](...)`), with the first letter of the next word
when it is plain, so that the sentence splitter sees a sentence end at once. Any chunking of a reply
gives the text of the whole reply. A heading marker that lost its line break ("Of course! ## Dinner
plan") starts a heading still: a run of 1-6 '#' after a sentence end, then a space and text, is put on
a line of its own (see _GluedHeadings). One case cannot be told in time: a line said in part before a
"|" arrives on it and a delimiter row follows (a table header row that starts without "|"; LLMs
start table rows with "|").
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from typing import NamedTuple
from urllib.parse import urlsplit

from markdown_it import MarkdownIt
from markdown_it.rules_inline import StateInline
from markdown_it.token import Token

# Joins an ordered item's number to its text: the sentence splitter would end a sentence after "3."
# before a capital ("3. Oktober", "1. Take"); clean_text turns it into a space (format character).
_WORD_JOINER = "\u2060"
# A bare URL up to, not including, the punctuation that ends its sentence or clause; CJK
# punctuation and full-width forms end it too ("请访问https://example.com/a。").
_URL = re.compile(r"(?<![a-z0-9.\-])(?:https?://|www\.)[^\s<>\"\u3000-\u303f\uff00-\uffef]+?"
                  r"(?=[.,;:!?'\")\]]*(?:[\s\u3000-\u303f\uff00-\uffef]|$))", re.IGNORECASE)
_OPEN_DELIMITER = "speech_open_delimiter"
# Looking for an early cut parses the open paragraph: after a search that found none, the next waits
# for the paragraph to grow by half of what is unsaid (at least this much), so that an unclosed
# construct (or a client sending "*a " a thousand times) costs a few parses, not one per chunk.
_SEARCH_AFTER_CHARS = 16
_MAX_UNSAID_SEARCHED = 2000  # beyond this the open paragraph is said when it closes
_MAX_CUTS_TRIED = 8
_CJK_SENTENCE_ENDS = "。！？"
_BLOCK_STARTS = set("-+*_#>=`~|:0123456789")
_SETTLED_CHARS = 16
_RULE_CHARACTERS = set("-*_= \t")
# A long block (a paragraph of many lines) is parsed again only when a blank line comes or its source
# grew by a quarter: each new line would parse it all again.
_LONG_SOURCE = 2000
_MAX_GUESS_LINES = 24  # a block of more lines: its line still arriving is not parsed with it again and again
# A heading marker glued to the sentence before it (its line break lost): a sentence end, closing
# quotes, brackets or emphasis, whitespace (none needed after a CJK full stop), then 1-6 '#' and a
# space before text. "#hashtags", "C#", "issue #12" and "the # of items" mid-sentence are not. The
# runs are bounded, so that what is held back while it may still become one stays short.
_CLOSERS = "[\"'\u201d\u2019)\u300d\u300f*_]{0,4}"
_GLUED_HEADING = re.compile(rf"(?:[.!?]{_CLOSERS}[ \t]{{1,16}}|[\u3002\uff01\uff1f]{_CLOSERS}[ \t]{{0,16}})"
                            rf"(?=#{{1,6}} {{1,16}}\S)")
_SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f]")
# What may follow a sentence end while more text can still make it a glued heading marker.
_MAY_BECOME_GLUED = {False: re.compile(rf"{_CLOSERS}(?:[ \t]{{1,16}}(?:#{{1,6}} {{0,16}})?)?"),
                     True: re.compile(rf"{_CLOSERS}[ \t]{{0,16}}(?:#{{1,6}} {{0,16}})?")}


class Piece(NamedTuple):
    """Plain text for the sentence splitter; ends_block: the block ends here (its last sentence is done)."""

    text: str
    ends_block: bool


@dataclass(frozen=True)
class _Block:
    """Something to say: a paragraph or heading (inline markdown), or a table row (header, cell pairs)."""

    first_line: int
    end_line: int  # one past its last source line
    kind: str  # "paragraph", "heading" or "row"
    content: str = ""
    lead: str = ""  # said first: an ordered list item's number
    cells: tuple[tuple[str, str], ...] = ()
    context_line: int = 0  # where to start parsing to read the line after it right: its table's first line


def markdown_parser() -> MarkdownIt:
    parser = MarkdownIt("commonmark", {"html": False})
    parser.enable(["table", "strikethrough"])
    # Indented code would silently swallow indented plain text (templates); a reference definition
    # could turn brackets into a link after they were spoken. LLMs write fences and inline links.
    parser.disable(["code", "reference"])
    parser.inline.ruler2.after("balance_pairs", "speech_open_delimiters", _note_open_delimiters)
    return parser


@functools.cache
def _parsers() -> tuple[MarkdownIt, MarkdownIt]:
    """(inline and all, blocks only), shared: building one costs milliseconds, parsing keeps its state
    per call. The block parser leaves inline content to be parsed where it is said, in bounded pieces."""
    block_parser = markdown_parser()
    block_parser.core.ruler.disable(["inline"])
    return markdown_parser(), block_parser


def _note_open_delimiters(state: StateInline) -> None:
    """Marks the env when an emphasis or strikethrough opener found no closer: more text could close it."""
    delimiter_lists = [state.delimiters]
    delimiter_lists += [meta["delimiters"] for meta in state.tokens_meta if meta and "delimiters" in meta]
    if any(delimiter.open and delimiter.end < 0 for delimiters in delimiter_lists for delimiter in delimiters):
        state.env[_OPEN_DELIMITER] = True


class _Structure(NamedTuple):
    """The blocks of the complete lines of the pending source."""

    complete: str
    blocks: list[_Block]
    line_count: int
    cut_lines: list[int]  # where the source may start: a top-level block, an item of a top-level list
    table_body_line: int | None  # the first body row of a table that is the last top-level block


class _Guess(NamedTuple):
    """The blocks with the line still arriving, from the line where its context starts. Once the
    arriving line is a paragraph line with its first word complete, more text on it only lengthens
    the last block's content: base + the line from its indent on."""

    complete: str
    blocks: list[_Block]
    base: str | None
    indent: int


class _GluedHeadings:
    """Puts a heading marker glued to the sentence before it on a line of its own, as the text streams
    in: the end of a chunk that more text could still make such a marker is held back until it is
    told, so any chunking gives the source the whole reply gives. Not in an inline code span (an odd
    number of backticks before it on the line) or a table row (a line starting with "|"); in a code
    block the line break changes nothing that is said."""

    def __init__(self) -> None:
        self.held = ""  # the end of the text that more text could still make a glued marker
        self._odd_backticks = False  # on the current line, as passed on
        self._row: bool | None = None  # the current line starts with "|" (None: no text on it yet)

    def feed(self, text: str, final: bool = False) -> str:
        text, self.held = self.held + text, ""
        passed, start = [], 0
        for match in _GLUED_HEADING.finditer(text):
            self._advance(text[start:match.start()])
            passed.append(text[start:match.start()])
            if self._odd_backticks or self._row:
                passed.append(match.group())
                self._advance(match.group())
            else:
                passed.append(match.group().rstrip(" \t") + "\n")
                self._odd_backticks, self._row = False, None
            start = match.end()
        rest = text[start:]
        if not final:
            hold = _may_be_glued_at(rest)
            rest, self.held = rest[:hold], rest[hold:]
        self._advance(rest)
        return "".join(passed) + rest

    def _advance(self, text: str) -> None:
        """The line state after the text is passed on."""
        line_start = text.rfind("\n") + 1
        if line_start:
            text, self._odd_backticks, self._row = text[line_start:], False, None
        self._odd_backticks ^= text.count("`") % 2 == 1
        if self._row is None and text.lstrip(" \t>"):
            self._row = text.lstrip(" \t>").startswith("|")


def _may_be_glued_at(text: str) -> int:
    """Where the earliest sentence end is that more text could still make a glued heading marker (the
    length of the text if none)."""
    for end in _SENTENCE_END.finditer(text):
        if _MAY_BECOME_GLUED[end.group() not in ".!?"].fullmatch(text, end.end()):
            return end.start()
    return len(text)


class MarkdownReader:
    """Markdown arriving in pieces -> Pieces of plain text, block by block.

    The complete lines are parsed when a line completes; the line still arriving is parsed with the
    last block (its context), once per line while it decides what it is. Only the source from the
    start of the last top-level block is kept: earlier top-level blocks are said and cannot change."""

    def __init__(self) -> None:
        self._parser, self._block_parser = _parsers()
        self._pending = ""  # source not yet said in full, from the start of a top-level block
        self._done = 0  # blocks of the pending source said in full
        self._said = 0  # characters of the next block's content said already
        self._structure: _Structure | None = None
        self._guess: _Guess | None = None
        self._after_cr = False  # the last chunk ended with a CR: a LF starting the next one is the same line end
        self._search_at = 0  # content length of the open block at which to look for a cut again
        self._headings = _GluedHeadings()

    def add(self, chunk: str) -> list[Piece]:
        self._pending += self._headings.feed(self._with_newlines(chunk))
        return self._release(final=False)

    def _with_newlines(self, chunk: str) -> str:
        """Line ends as markdown-it sees them (CR LF and CR are LF), a CR LF split across chunks included."""
        if self._after_cr and chunk.startswith("\n"):
            chunk = chunk[1:]
        self._after_cr = chunk.endswith("\r")
        return chunk.replace("\r\n", "\n").replace("\r", "\n")

    @property
    def unsaid(self) -> str:
        """The markdown not said yet: the rest of the open block, then the source after it (all the
        pending source if that cannot be told)."""
        try:
            structure = self._structure
            blocks = structure.blocks if structure else []
            guess = self._guess
            if self._done < len(blocks):
                block, content = blocks[self._done], blocks[self._done].content
            elif guess and guess.blocks and guess.blocks[-1].first_line >= structure.line_count:
                block, content = guess.blocks[-1], guess.blocks[-1].content
                if guess.base is not None:  # the arriving line as it is now
                    content = guess.base + self._pending[len(structure.complete) + guess.indent:]
            else:
                return self._pending + self._headings.held if self._said == 0 else self._headings.held
            return (content[self._said:] + "\n\n" + self._pending[_offset_of_line(self._pending, block.end_line):]
                    + self._headings.held)
        except Exception:  # noqa: BLE001 (asked for after a failure: whatever state there is)
            return self._pending + self._headings.held

    def finish(self) -> list[Piece]:
        self._pending += self._headings.feed("", final=True)
        pieces = self._release(final=True)
        self._pending, self._done, self._said, self._structure, self._guess = "", 0, 0, None, None
        self._after_cr, self._search_at, self._headings = False, 0, _GluedHeadings()
        return pieces

    # -- what can be said ------------------------------------------------------------------------------

    def _release(self, final: bool) -> list[Piece]:
        structure = self._structure_of(self._pending if final else self._pending[: self._pending.rfind("\n") + 1],
                                       final)
        blocks = structure.blocks
        arriving = [] if final else self._with_arriving_line(structure)
        pieces = []
        while self._done < len(blocks) and (final or _is_closed(blocks[self._done], structure.line_count)
                                             or self._is_followed(structure, arriving)):
            pieces.append(Piece(self._rest_of(blocks[self._done]), True))
            self._done, self._said, self._search_at = self._done + 1, 0, 0
        if not final:
            pieces.extend(self._open_part(structure, arriving))
            self._forget_said_blocks(structure)
        return [piece for piece in pieces if piece.text or piece.ends_block]

    def _is_followed(self, structure: _Structure, arriving: list[_Block]) -> bool:
        """The line still arriving already starts a new block with text after its marker ("- It", "## Ti"):
        the last block of the complete lines is closed without waiting for the end of that line."""
        blocks = structure.blocks
        if self._done != len(blocks) - 1 or len(arriving) != 2 or not _same_text(arriving[0], blocks[-1]):
            return False
        following = arriving[1]
        return following.first_line >= structure.line_count and following.kind != "row" and bool(
            following.content.strip())

    def _rest_of(self, block: _Block) -> str:
        if block.kind == "row":
            return ", ".join(self._row_cell(header, cell) for header, cell in block.cells if cell.strip())
        return self._text_of(block, block.content[self._said:])

    def _row_cell(self, header: str, cell: str) -> str:
        header_text, cell_text = self._spoken(header).strip(), self._spoken(cell).strip()
        return f"{header_text}: {cell_text}" if header_text else cell_text

    def _text_of(self, block: _Block, content: str) -> str:
        return (block.lead if self._said == 0 else "") + self._spoken(content)

    def _open_part(self, structure: _Structure, arriving: list[_Block]) -> list[Piece]:
        """Early fragments of the open paragraph or heading: its complete lines, and the line still
        arriving when that line goes on the same block."""
        blocks = structure.blocks
        open_block = blocks[self._done] if self._done < len(blocks) else None
        if open_block is not None and open_block.kind == "row":
            return []
        content, end_is_a_cut = "", False
        if open_block is not None:
            content, end_is_a_cut = open_block.content, True
            last_line_start = content.rfind("\n") + 1
            if "|" in content[last_line_start:]:  # a table's header row if the next line is a delimiter row
                content = content[: max(last_line_start - 1, 0)]
        guess = self._arriving_block(blocks, arriving)
        partial = self._pending[len(structure.complete):]
        if (guess is not None and guess.kind != "row" and "|" not in partial and guess.content.startswith(content)
                and (open_block is None or (content == open_block.content
                                             and guess.first_line == open_block.first_line))):
            open_block, content = open_block or guess, guess.content
        if open_block is None:
            return []
        cut = self._last_safe_cut(content, end_is_a_cut and content == open_block.content)
        said_to = _past_next_letter(content, self._said if cut is None else cut)
        if said_to == self._said:
            return []
        text = self._text_of(open_block, content[self._said:said_to])
        self._said, self._search_at = said_to, 0
        return [Piece(text, False)]

    def _arriving_block(self, blocks: list[_Block], arriving: list[_Block]) -> _Block | None:
        """The block the arriving line belongs to, when it is the next block to say and the last one."""
        if not arriving:
            return None
        first_index = max(len(blocks) - 1, 0)  # the guess starts with the last complete block, if any
        if first_index + len(arriving) - 1 != self._done:
            return None
        return arriving[-1]

    def _last_safe_cut(self, content: str, end_is_a_cut: bool) -> int | None:
        """The latest position after what is said already, before a space, after a CJK full stop, or
        at the end of the complete lines, up to which no markdown construct is open. Candidates are
        tried at doubling distances from the last, so a long open construct costs a few parses, not
        one per word."""
        if len(content) < self._search_at or len(content) - self._said > _MAX_UNSAID_SEARCHED:
            return None
        cuts = [index for index in range(self._said + 1, len(content))
                if (content[index].isspace() and not content[index - 1].isspace())
                or content[index - 1] in _CJK_SENTENCE_ENDS]
        if end_is_a_cut and len(content) > self._said:
            cuts.append(len(content))
        for index in _doubling_back(len(cuts))[:_MAX_CUTS_TRIED]:
            if self._constructs_closed(content[self._said:cuts[index]]):
                return cuts[index]
        if cuts:
            self._search_at = len(content) + max(_SEARCH_AFTER_CHARS, (len(content) - self._said) // 2)
        return None

    def _constructs_closed(self, fragment: str) -> bool:
        env: dict = {}
        children = self._parser.parseInline(fragment, env)[0].children or []
        if env.get(_OPEN_DELIMITER):
            return False
        literal = "".join(token.content for token in children if token.type == "text")
        return "`" not in literal and _brackets_closed(literal)

    def _forget_said_blocks(self, structure: _Structure) -> None:
        """Drops the source of blocks said in full where what follows reads the same without it: before
        a top-level block or an item of a top-level list, and a table's body rows (its header stays)."""
        blocks = structure.blocks
        next_line = blocks[self._done].first_line if self._done < len(blocks) else structure.line_count
        cut = max((line for line in structure.cut_lines if line <= next_line), default=0)
        if cut > 0:
            self._drop_lines(blocks, 0, cut)
        elif structure.table_body_line is not None and self._done and blocks[self._done - 1].kind == "row":
            first_row, said_rows_end = structure.table_body_line, blocks[self._done - 1].end_line
            if said_rows_end > first_row:  # a blank line after them still ends the table
                self._drop_lines(blocks, first_row, said_rows_end)

    def _drop_lines(self, blocks: list[_Block], start: int, end: int) -> None:
        self._done -= sum(1 for block in blocks if start <= block.first_line < end)
        self._pending = (self._pending[: _offset_of_line(self._pending, start)]
                         + self._pending[_offset_of_line(self._pending, end):])
        self._structure = self._guess = None

    # -- parsing ---------------------------------------------------------------------------------------

    def _structure_of(self, complete: str, final: bool) -> _Structure:
        known = self._structure
        if known is not None and (known.complete == complete or (not final and _parse_later(known.complete, complete))):
            return known
        tokens = self._block_parser.parse(complete)
        cut_lines = [token.map[0] for token in tokens if token.map and token.nesting >= 0 and (
            token.level == 0 or (token.level == 1 and token.type == "list_item_open"))]
        tables = [token for token in tokens if token.type == "table_open" and token.level == 0]
        last_is_a_table = tables and cut_lines[-1] == tables[-1].map[0]
        table_body_line = tables[-1].map[0] + 2 if last_is_a_table else None  # after the header and delimiter rows
        # Lines as markdown-it counts them: "\n" only (not form feeds or U+2028).
        self._structure = _Structure(complete, _blocks(tokens), complete.count("\n"), cut_lines, table_body_line)
        return self._structure

    def _with_arriving_line(self, structure: _Structure) -> list[_Block]:
        """The blocks from the last complete block (its table, for a row) on, with the line still
        arriving: a guess, since the rest of that line can still change them. Lines are numbered as
        in the pending source."""
        partial = self._pending[len(structure.complete):]
        if not partial.strip() or "|" in partial:  # nothing, or maybe a table row: said when complete
            return []
        if "\n" in partial:  # complete lines not parsed yet (a long block): no guess before they are
            return []
        guess = self._guess
        if guess is not None and guess.complete == structure.complete and guess.base is not None:
            return guess.blocks[:-1] + [replace(guess.blocks[-1], content=guess.base + partial[guess.indent:])]
        context_line = structure.blocks[-1].context_line if structure.blocks else 0
        source = self._pending[_offset_of_line(self._pending, context_line):]
        if len(source) > _LONG_SOURCE or source.count("\n") > _MAX_GUESS_LINES:  # said once the line is complete
            return []
        blocks = [replace(block, first_line=block.first_line + context_line,
                          end_line=block.end_line + context_line, context_line=block.context_line + context_line)
                  for block in _blocks(self._block_parser.parse(source))]
        self._guess = _Guess(structure.complete, blocks, *_line_base(blocks, partial))
        return blocks

    def _spoken(self, inline_markdown: str) -> str:
        if not inline_markdown:
            return ""
        children = self._parser.parseInline(inline_markdown, {})[0].children or []
        return "".join(_spoken_token(token) for token in children)


def _parse_later(parsed: str, complete: str) -> bool:
    """The complete lines parsed before still tell what can be said: the source is long, the new lines
    hold no blank line, and they are less than a quarter of what was parsed."""
    if len(parsed) < _LONG_SOURCE or not complete.startswith(parsed):
        return False
    new_lines = complete[len(parsed):]
    return len(new_lines) * 4 < len(parsed) and not any(not line.strip() for line in new_lines.split("\n")[:-1])


def _line_base(blocks: list[_Block], partial: str) -> tuple[str | None, int]:
    """(base, indent) when the arriving line is settled as a line of the last block, a paragraph: its
    first word is complete and more text can only lengthen it. (None, 0) otherwise."""
    stripped = partial.strip()
    # What a line is depends on how it starts ("1. It", "- It", "# It", "```"): decided once a word
    # follows its first one, or after a few characters; a line starting otherwise starts no block. A
    # line of only "-", "*", "_", "=" can still become a rule or a heading's underline.
    settled = (stripped[:1] not in _BLOCK_STARTS or len(stripped.split()) > 1
               or len(stripped) >= _SETTLED_CHARS) and not set(stripped) <= _RULE_CHARACTERS
    if not (settled and blocks and blocks[-1].kind == "paragraph" and blocks[-1].content.endswith(stripped)):
        return None, 0
    return blocks[-1].content[: len(blocks[-1].content) - len(stripped)], len(partial) - len(partial.lstrip())


def _same_text(one: _Block, other: _Block) -> bool:
    return (one.kind, one.content, one.lead, one.cells) == (other.kind, other.content, other.lead, other.cells)


def _spoken_token(token: Token) -> str:
    if token.type in ("text", "code_inline"):
        return hosts_for_urls(token.content)
    if token.type in ("softbreak", "hardbreak"):
        return " "
    return ""  # emphasis, strikethrough and link markers; images (in a reply, decoration)


def hosts_for_urls(text: str) -> str:
    """Each bare URL becomes its host without "www." (weather.example.com): a listener cannot use a
    spelled-out path or query."""
    return _URL.sub(_host_of, text)


def _host_of(match: re.Match) -> str:
    url = match.group(0)
    try:
        host = urlsplit(url if "://" in url else f"http://{url}").hostname or ""
    except ValueError:  # a malformed port or IPv6 literal
        host = ""
    return host.removeprefix("www.")


def _blocks(tokens: list[Token]) -> list[_Block]:
    blocks: list[_Block] = []
    kind, item_number, in_header = "paragraph", "", False
    header: list[str] = []
    cells: list[str] | None = None  # the table row being read
    row_lines, table_line = (0, 0), 0
    for token in tokens:
        if token.type in ("paragraph_open", "heading_open"):
            kind = token.type.removesuffix("_open")
        elif token.type == "list_item_open":
            item_number = token.info  # the number of an ordered item, "" for a bullet
        elif token.type in ("fence", "hr", "table_open", "list_item_close"):  # an item without text
            item_number = ""
            table_line = token.map[0] if token.type == "table_open" else table_line
        elif token.type in ("thead_open", "thead_close"):
            in_header = token.type == "thead_open"
        elif token.type == "tr_open":
            cells, row_lines = [], tuple(token.map)
        elif token.type == "inline" and cells is not None:
            cells.append(token.content)
        elif token.type == "tr_close" and cells is not None:
            if in_header:
                header = cells
            else:  # each body row a sentence of its own: "time: 9:00, temp: 12"
                pairs = tuple(zip([*header, *[""] * len(cells)], cells))
                blocks.append(_Block(*row_lines, "row", cells=pairs, context_line=table_line))
            cells = None
        elif token.type == "inline":
            lead = f"{item_number}.{_WORD_JOINER} " if item_number else ""
            blocks.append(_Block(token.map[0], token.map[1], kind, token.content, lead, context_line=token.map[0]))
            item_number = ""
    return blocks


def _is_closed(block: _Block, line_count: int) -> bool:
    """Headings and table rows are one line; a paragraph is closed once a line after it is complete."""
    return block.kind in ("heading", "row") or block.end_line < line_count


def _doubling_back(count: int) -> list[int]:
    """count-1, count-2, count-4, ... and 0."""
    indexes, step = [], 1
    while count - step >= 0:
        indexes.append(count - step)
        step *= 2
    return indexes + ([0] if count and indexes[-1] != 0 else [])


def _past_next_letter(content: str, cut: int) -> int:
    """The cut, or just past the first letter of the word after it when that word is known to be a
    plain word: the sentence splitter only ends a sentence once it sees the next one start ("today. T",
    "。下"), and a letter followed by a letter or digit starts no markdown (a URL is kept whole)."""
    at_a_gap = cut >= len(content) or content[cut].isspace() or (cut and content[cut - 1] in _CJK_SENTENCE_ENDS)
    if not at_a_gap:
        return cut
    start = cut
    while start < len(content) and content[start].isspace():
        start += 1
    end = start
    while end < len(content) and content[end].isalnum():
        end += 1
    word = content[start:end].lower()
    if len(word) < 2 or not word[0].isalpha() or _may_start_a_url(word) or _may_start_a_url(word[1:]):
        return cut
    return start + 1


def _may_start_a_url(letters: str) -> bool:
    return any(prefix.startswith(letters) or letters.startswith(prefix) for prefix in ("https", "www"))


def _brackets_closed(literal: str) -> bool:
    """No "[" waits for its "](...)": later text could still make it a link."""
    depth = 0
    for index, char in enumerate(literal):
        if char == "[":
            depth += 1
        elif char == "]" and depth:
            if literal[index + 1:index + 2] == "(":
                return False
            depth -= 1
    return depth == 0


def _offset_of_line(text: str, line: int) -> int:
    """Where the line starts; the end of the text when it has fewer lines."""
    offset = 0
    for _ in range(line):
        offset = text.find("\n", offset) + 1
        if offset == 0:
            return len(text)
    return offset
