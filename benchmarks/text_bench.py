"""CPU cost of reading streamed text (markdown on and off): LLM-like replies and hostile inputs, each
5000 characters at most (the default --max-text-chars), fed in pieces of a few sizes.

    python benchmarks/text_bench.py [--runs 3] [--json results.json]

Prints a Markdown table: total milliseconds per request (median of the runs) and the longest single
add() (how long one synthesize-chunk can hold the event loop). No model, no torch.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wyoming_qwen_tts.request_text import RequestText  # noqa: E402

MAX_CHARS = 5000
WEATHER = """**Sure!** Here is the weather for today:

- *Morning*: 12 °C and cloudy
- **Afternoon**: sunny, see the [detailed forecast](https://weather.example.com/today?city=berlin) for more.

### Tips
1. Take `sunglasses` with you.

| time | temp |
|---|---|
| 9:00 | 12 |

Have a great day! 😀"""

TEXTS = {
    "issue reply": WEATHER,
    "replies, 5000 chars": (WEATHER + "\n\n") * 20,
    "list of 60 items": "".join(f"- Item {i} is **here** with a [link](https://x.example/{i}). More.\n"
                                for i in range(60)),
    "one long paragraph": "This is *a* sentence with `code` in it. " * 200,
    "Chinese paragraph": "今天**天气**很好。" * 600,
    "table of 300 rows": "| a | b |\n|---|---|\n" + "".join(f"| {i} | value {i} |\n" for i in range(300)),
    "hostile: [ x 5000": "[" * 5000,
    "hostile: '*a ' x 1666": "*a " * 1666,
    "hostile: quote of 700 lines": "> a *b\n" * 700,
    "hostile: '- ' x 2500": "- " * 2500,
}
CHUNK_SIZES = (2, 7, 50)


def measure(text: str, chunk_size: int, markdown: bool) -> tuple[float, float]:
    """(total ms, longest add in ms) for one request."""
    request = RequestText(MAX_CHARS, markdown=markdown)
    longest = 0.0
    started = time.perf_counter()
    for start in range(0, len(text), chunk_size):
        before = time.perf_counter()
        request.add(text[start:start + chunk_size])
        longest = max(longest, time.perf_counter() - before)
    request.finish()
    return (time.perf_counter() - started) * 1000, longest * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = []
    print("| text | chunk | markdown ms | longest add ms | plain ms |")
    print("|---|---|---|---|---|")
    for name, text in TEXTS.items():
        text = text[:MAX_CHARS]
        for chunk_size in CHUNK_SIZES:
            with_markdown = [measure(text, chunk_size, True) for _ in range(args.runs)]
            plain = [measure(text, chunk_size, False)[0] for _ in range(args.runs)]
            row = {"text": name, "chunk": chunk_size,
                   "markdown_ms": statistics.median(total for total, _ in with_markdown),
                   "longest_add_ms": max(longest for _, longest in with_markdown),
                   "plain_ms": statistics.median(plain)}
            rows.append(row)
            print(f"| {name} | {chunk_size} | {row['markdown_ms']:.0f} | {row['longest_add_ms']:.1f} "
                  f"| {row['plain_ms']:.0f} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
