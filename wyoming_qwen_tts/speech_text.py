"""Speech-ready text from markdown and chat output (LLM replies), as it streams in.

markdown-it parses; this module decides what a listener hears: emphasis markers are dropped, each
heading, list item, paragraph and table row is its own block (the sentence splitter ends its last
sentence there, a pause instead of a "hash" or a dash), links are read as their text, bare URLs as
their host, inline code as text, code blocks are skipped (see the README). No torch here.

Streaming: a block's text is said when the block is closed (a later line shows it cannot go on), and
the open paragraph is said early in fragments cut before a space where no markdown construct is open
(`**`, backticks, `[...](...)`), so that complete sentences are spoken at once while every chunking
of the reply gives the same text as the whole reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

from markdown_it import MarkdownIt
from markdown_it.rules_inline import StateInline
from markdown_it.token import Token

# Joins an ordered item's number to its text: the sentence splitter would end a sentence after "3."
# before a capital ("3. Oktober", "1. Take"); clean_text turns it into a space (format character).
_WORD_JOINER = "\u2060"
# A bare URL up to, not including, the punctuation that ends its sentence or clause.
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"]+?(?=[.,;:!?'\")\]]*(?:\s|$))", re.IGNORECASE)
_OPEN_DELIMITER = "speech_open_delimiter"
_CJK_SENTENCE_ENDS = "。！？"


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


def markdown_parser() -> MarkdownIt:
    parser = MarkdownIt("commonmark", {"html": False})
    parser.enable(["table", "strikethrough"])
    # Indented code would silently swallow indented plain text (templates); a reference definition
    # could turn brackets into a link after they were spoken. LLMs write fences and inline links.
    parser.disable(["code", "reference"])
    parser.inline.ruler2.after("balance_pairs", "speech_open_delimiters", _note_open_delimiters)
    return parser


def _note_open_delimiters(state: StateInline) -> None:
    """Marks the env when an emphasis or strikethrough opener found no closer: more text could close it."""
    delimiter_lists = [state.delimiters]
    delimiter_lists += [meta["delimiters"] for meta in state.tokens_meta if meta and "delimiters" in meta]
    if any(delimiter.open and delimiter.end < 0 for delimiters in delimiter_lists for delimiter in delimiters):
        state.env[_OPEN_DELIMITER] = True


class MarkdownReader:
    """Markdown arriving in pieces -> Pieces of plain text, block by block.

    Only the source from the start of the last top-level block is kept and parsed again; earlier
    top-level blocks are said and cannot change."""

    def __init__(self) -> None:
        self._parser = markdown_parser()
        self._pending = ""  # source not yet said, from the start of a top-level block
        self._done = 0  # blocks of the pending source said in full
        self._said = 0  # characters of the next block's content said already
        self._structure: tuple[str, list[_Block], int] | None = None  # (complete lines, blocks, last top-level start)

    def add(self, chunk: str) -> list[Piece]:
        self._pending += chunk
        return self._release(final=False)

    def finish(self) -> list[Piece]:
        pieces = self._release(final=True)
        self._pending, self._done, self._said, self._structure = "", 0, 0, None
        return pieces

    # -- what can be said ------------------------------------------------------------------------------

    def _release(self, final: bool) -> list[Piece]:
        complete = self._pending if final else self._pending[: self._pending.rfind("\n") + 1]
        blocks, last_top_start = self._blocks_of(complete)
        line_count = len(complete.splitlines())
        arriving = [] if final else self._with_arriving_line(complete)
        pieces = []
        while self._done < len(blocks) and (final or _is_closed(blocks[self._done], line_count)
                                             or _is_followed(blocks[self._done], arriving, self._done, line_count)):
            pieces.append(Piece(self._rest_of(blocks[self._done]), True))
            self._done, self._said = self._done + 1, 0
        if not final:
            pieces.extend(self._open_part(blocks, arriving, complete))
            self._forget_said_blocks(blocks, last_top_start)
        return [piece for piece in pieces if piece.text or piece.ends_block]

    def _with_arriving_line(self, complete: str) -> list[_Block]:
        """The blocks as they stand with the line still arriving (none when nothing arrives after the
        complete lines): a guess, since the rest of the line can change them."""
        partial = self._pending[len(complete):]
        if not partial.strip():
            return []
        return self._parse(self._pending)[0]

    def _rest_of(self, block: _Block) -> str:
        if block.kind == "row":
            return ", ".join(self._row_cell(header, cell) for header, cell in block.cells if cell.strip())
        return self._text_of(block, block.content[self._said:])

    def _row_cell(self, header: str, cell: str) -> str:
        header_text, cell_text = self._spoken(header).strip(), self._spoken(cell).strip()
        return f"{header_text}: {cell_text}" if header_text else cell_text

    def _text_of(self, block: _Block, content: str) -> str:
        return (block.lead if self._said == 0 else "") + self._spoken(content)

    def _open_part(self, blocks: list[_Block], arriving: list[_Block], complete: str) -> list[Piece]:
        """Early fragments of the open paragraph or heading: its complete lines, and the line still
        arriving when that line goes on the same block."""
        open_block = blocks[self._done] if self._done < len(blocks) else None
        if open_block is not None and open_block.kind == "row":
            return []
        content, end_is_a_cut = "", False
        if open_block is not None:
            content, end_is_a_cut = open_block.content, True
            last_line_start = content.rfind("\n") + 1
            if "|" in content[last_line_start:]:  # a table's header row if the next line is a delimiter row
                content = content[: max(last_line_start - 1, 0)]
        guess = arriving[-1] if len(arriving) == self._done + 1 else None
        partial = self._pending[len(complete):]
        if (guess is not None and guess.kind != "row" and "|" not in partial and guess.content.startswith(content)
                and (open_block is None or (content == open_block.content
                                             and guess.first_line == open_block.first_line))):
            open_block, content = open_block or guess, guess.content
        if open_block is None:
            return []
        cut = self._last_safe_cut(content, end_is_a_cut and content == open_block.content)
        if cut is None:
            return []
        said_to = _past_next_letter(content, cut)
        text = self._text_of(open_block, content[self._said:said_to])
        self._said = said_to
        return [Piece(text, False)]

    def _last_safe_cut(self, content: str, end_is_a_cut: bool) -> int | None:
        """The latest position after what is said already, before a space, after a CJK full stop, or
        at the end of the complete lines, up to which no markdown construct is open. Candidates are
        tried at doubling distances from the last, so a long open construct costs a few parses, not
        one per word."""
        cuts = [index for index in range(self._said + 1, len(content))
                if (content[index].isspace() and not content[index - 1].isspace())
                or content[index - 1] in _CJK_SENTENCE_ENDS]
        if end_is_a_cut and len(content) > self._said:
            cuts.append(len(content))
        for index in _doubling_back(len(cuts)):
            if self._constructs_closed(content[self._said:cuts[index]]):
                return cuts[index]
        return None

    def _constructs_closed(self, fragment: str) -> bool:
        env: dict = {}
        children = self._parser.parseInline(fragment, env)[0].children or []
        if env.get(_OPEN_DELIMITER):
            return False
        literal = "".join(token.content for token in children if token.type == "text")
        return "`" not in literal and _brackets_closed(literal)

    def _forget_said_blocks(self, blocks: list[_Block], last_top_start: int) -> None:
        """Drops the source of top-level blocks said in full; the last one may still go on (a list, a fence)."""
        said_before = sum(1 for block in blocks if block.first_line < last_top_start)
        if last_top_start <= 0 or self._done < said_before:
            return
        offset = _offset_of_line(self._pending, last_top_start)
        self._pending = self._pending[offset:]
        self._done -= said_before
        self._structure = None

    # -- parsing ---------------------------------------------------------------------------------------

    def _blocks_of(self, complete: str) -> tuple[list[_Block], int]:
        if self._structure is None or self._structure[0] != complete:
            self._structure = (complete, *self._parse(complete))
        return self._structure[1], self._structure[2]

    def _parse(self, source: str) -> tuple[list[_Block], int]:
        tokens = self._parser.parse(source)
        top_starts = [token.map[0] for token in tokens if token.level == 0 and token.map and token.nesting >= 0]
        return _blocks(tokens), (top_starts[-1] if top_starts else 0)

    def _spoken(self, inline_markdown: str) -> str:
        if not inline_markdown:
            return ""
        children = self._parser.parseInline(inline_markdown, {})[0].children or []
        return "".join(_spoken_token(token) for token in children)


def _spoken_token(token: Token) -> str:
    if token.type in ("text", "code_inline"):
        return hosts_for_urls(token.content)
    if token.type in ("softbreak", "hardbreak"):
        return " "
    if token.type == "image":  # its alt text, like a screen reader
        return "".join(_spoken_token(child) for child in token.children or [])
    return ""  # emphasis, strikethrough and link markers


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
    row_lines = (0, 0)
    for token in tokens:
        if token.type in ("paragraph_open", "heading_open"):
            kind = token.type.removesuffix("_open")
        elif token.type == "list_item_open":
            item_number = token.info  # the number of an ordered item, "" for a bullet
        elif token.type in ("fence", "hr", "table_open"):
            item_number = ""
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
                blocks.append(_Block(*row_lines, "row", cells=pairs))
            cells = None
        elif token.type == "inline":
            lead = f"{item_number}.{_WORD_JOINER} " if item_number else ""
            blocks.append(_Block(token.map[0], token.map[1], kind, token.content, lead))
            item_number = ""
    return blocks


def _is_closed(block: _Block, line_count: int) -> bool:
    """Headings and table rows are one line; a paragraph is closed once a line after it is complete."""
    return block.kind in ("heading", "row") or block.end_line < line_count


def _is_followed(block: _Block, arriving: list[_Block], index: int, line_count: int) -> bool:
    """The line still arriving already starts a new block with text after its marker ("- It", "## Ti"):
    the block before it is closed without waiting for the end of that line."""
    if len(arriving) != index + 2 or arriving[index] != block:
        return False
    following = arriving[index + 1]
    return following.first_line >= line_count and following.kind != "row" and bool(following.content.strip())


def _doubling_back(count: int) -> list[int]:
    """count-1, count-2, count-4, ... and 0."""
    indexes, step = [], 1
    while count - step >= 0:
        indexes.append(count - step)
        step *= 2
    return indexes + ([0] if count and indexes[-1] != 0 else [])


def _past_next_letter(content: str, cut: int) -> int:
    """The cut, or just past the first letter of the next word when that word is known to be a plain
    word: the sentence splitter only ends a sentence once it sees the next one start ("today. T"),
    and a letter followed by a letter or digit starts no markdown (a URL is kept whole)."""
    start = cut
    while start < len(content) and content[start].isspace():
        start += 1
    end = start
    while end < len(content) and content[end].isalnum():
        end += 1
    word = content[start:end].lower()
    if len(word) < 2 or not word[0].isalpha() or any(prefix.startswith(word) for prefix in ("https", "www")):
        return cut
    return start + 1


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
    offset = 0
    for _ in range(line):
        offset = text.index("\n", offset) + 1
    return offset
