"""Realized token shares of an export, the toy corpus's way (tests/test_export.py): ids 1-99 are `short`,
101-199 `mid`, 201-299 `long`; 0 is end-of-text."""

from collections import Counter

NAMES = ("short", "mid", "long")
ASKED = {"short": 0.5, "mid": 0.3, "long": 0.2}


def domain(token: int) -> str:
    return NAMES[(int(token) - 1) // 100]


def report(library: str, tokens: Counter) -> None:
    total = sum(tokens.values())
    print(f"{library}: realized token shares over {total:,} tokens",
          {d: round(tokens[d] / total, 4) for d in NAMES}, "asked", ASKED)
