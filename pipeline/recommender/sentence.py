"""A typed sentence, e.g. "20 minutes of calm piano, nothing before 1990, no more than two
songs per artist", read into an `InstantPlan`: what the `instant` request answers.

A small grammar, not a language model: each rule recognises one kind of
constraint (a length, a count, an artist cap, years, a tempo, a key, things
to avoid, words for tempo and energy), records the phrase it read and what it
made of it, and removes it; what is left, less filler words, is the prompt,
which the text search maps onto tags with the sentence model sonicbus ships.
Nothing the user typed is ever executed: the plan only holds typed values.
English only; a sentence with nothing recognisable gives a plan that says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipeline.schemas.queries import InstantPlan, TrackFilters

NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "twelve": 12, "fifteen": 15,
    "twenty": 20, "thirty": 30, "forty": 40, "forty-five": 45, "fifty": 50, "sixty": 60,
    "ninety": 90, "hundred": 100,
}  # fmt: skip
NUMBER = r"(?P<n>\d+(?:\.\d+)?|" + "|".join(sorted(NUMBERS, key=len, reverse=True)) + ")"
SONGS = r"(?:songs?|tracks?|tunes?|pieces?)"
# Words for tempo and energy: a filter each, and they stay in the prompt (tags know them too).
FIGURE_WORDS: dict[str, tuple[str, tuple[float, float]]] = {
    "fast": ("bpm", (120.0, 300.0)),
    "upbeat": ("bpm", (110.0, 300.0)),
    "uptempo": ("bpm", (110.0, 300.0)),
    "slow": ("bpm", (30.0, 95.0)),
    "calm": ("energy", (0.0, 0.4)),
    "relaxing": ("energy", (0.0, 0.4)),
    "quiet": ("energy", (0.0, 0.35)),
    "gentle": ("energy", (0.0, 0.4)),
    "energetic": ("energy", (0.6, 1.0)),
    "intense": ("energy", (0.65, 1.0)),
    "loud": ("energy", (0.65, 1.0)),
}
FILLER = {
    "a", "an", "the", "of", "some", "me", "play", "give", "i", "want", "would", "like",
    "please", "music", "songs", "song", "tracks", "track", "playlist", "mix", "with", "and",
    "for", "to", "that", "is", "are", "be", "just", "only", "but", "in", "on", "by", "from",
}  # fmt: skip
MAX_MINUTES = 24 * 60


def number(text: str) -> float:
    return float(text) if text[0].isdigit() else float(NUMBERS[text.lower()])


@dataclass
class _Reading:
    """The sentence as it is consumed, and what the rules made of it."""

    rest: str
    understood: list[str] = field(default_factory=list)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    values: dict[str, object] = field(default_factory=dict)
    negatives: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def take(self, pattern: str) -> list[re.Match[str]]:
        """Every match of `pattern` in what is left; the matched text is removed."""
        found = list(re.finditer(pattern, self.rest, flags=re.IGNORECASE))
        for match in reversed(found):
            self.rest = self.rest[: match.start()] + " , " + self.rest[match.end() :]
        return found

    def narrow(self, name: str, low: float, high: float, phrase: str) -> None:
        """Intersect the figure's range with [low, high] (contradictions are said, not fixed)."""
        old_low, old_high = self.ranges.get(name, (float("-inf"), float("inf")))
        new = (max(old_low, low), min(old_high, high))
        if new[0] > new[1]:
            self.warnings.append(f"{phrase!r} contradicts an earlier {name} condition; ignored")
            return
        self.ranges[name] = new
        self.understood.append(f"{phrase.strip()} -> {name} {_shown(new)}")


def _shown(span: tuple[float, float]) -> str:
    low, high = span
    if high == float("inf"):
        return f">= {low:g}"
    if low == float("-inf"):
        return f"<= {high:g}"
    return f"[{low:g}, {high:g}]"


def read_sentence(sentence: str) -> InstantPlan:
    """The plan of `sentence` (see the module docstring)."""
    reading = _Reading(" " + sentence.strip() + " ")
    _lengths(reading)
    _years(reading)
    _tempo_and_key(reading)
    _negatives(reading)
    words = re.findall(r"[^\W\d_][\w'-]*", reading.rest.lower())
    for word in words:
        if word in FIGURE_WORDS:
            name, (low, high) = FIGURE_WORDS[word]
            reading.narrow(name, low, high, word)
    prompt = " ".join(w for w in words if w not in FILLER)
    if prompt:
        reading.understood.append(f"{prompt} -> described sound (text search)")
    return _plan(reading, prompt or None)


def figure_words(prompt: str) -> tuple[TrackFilters | None, list[str]]:
    """The tempo and energy words of a `text` prompt ("fast", "calm") as filters, and each
    word with its meaning; (None, []) when it has none. Same table as the sentences."""
    reading = _Reading(prompt)
    for word in re.findall(r"[a-z]+", prompt.lower()):
        if word in FIGURE_WORDS:
            name, (low, high) = FIGURE_WORDS[word]
            reading.narrow(name, low, high, word)
    plan = _plan(reading, None)
    return plan.filters, plan.understood + plan.warnings


def _lengths(reading: _Reading) -> None:
    cap = rf"(?:no more than|not more than|at most|max(?:imum)?|up to|only)\s+{NUMBER}\s+"
    for m in reading.take(cap + rf"{SONGS}?\s*(?:per|by|from (?:each|any|one)|each)\s+artists?"):
        reading.values["max_per_artist"] = max(1, int(number(m["n"])))
        reading.understood.append(f"{m[0].strip()} -> at most {m['n']} per artist")
    for m in reading.take(rf"\b{NUMBER}\s+{SONGS}\s+(?:per|by each|from each)\s+artist\b"):
        reading.values["max_per_artist"] = max(1, int(number(m["n"])))
        reading.understood.append(f"{m[0].strip()} -> at most {m['n']} per artist")
    for m in reading.take(r"\bhalf an hour\b(?:\s+of\b)?"):
        reading.values["minutes"] = 30.0
        reading.understood.append(f"{m[0].strip()} -> 30 minutes")
    unit = r"(?P<unit>minutes?|mins?|hours?|hrs?|h)\b"
    for m in reading.take(rf"\b{NUMBER}[\s-]*{unit}(?:\s+(?:long|of))?\b"):
        minutes = number(m["n"]) * (60 if m["unit"].lower().startswith("h") else 1)
        if 0 < minutes <= MAX_MINUTES:
            reading.values["minutes"] = minutes
            reading.understood.append(f"{m[0].strip()} -> {minutes:g} minutes")
        else:
            reading.warnings.append(f"{m[0].strip()!r}: a length over a day or of 0; ignored")
    for m in reading.take(rf"\b{NUMBER}\s+{SONGS}\b(?:\s+of\b)?"):
        count = int(number(m["n"]))
        if count >= 1:
            reading.values["count"] = count
            reading.understood.append(f"{m[0].strip()} -> {count} tracks")


YEAR = r"(?P<y>1[89]\d\d|20\d\d)"
YEAR_SPAN = rf"\b(?:between|from)\s+{YEAR}\s+(?:and|to|-)\s+(?P<z>1[89]\d\d|20\d\d)\b"
DECADE = r"\b(?:(?:from|of|in)\s+)?(?:the\s+)?(?P<d>(?:1[89]|20)?\d0)'?s\b"
NEGATED = r"(?P<neg>\b(?:nothing|no\s+\w+|not|none)\s+)?"
BEFORE = NEGATED + rf"\b(?P<w>before|older than|earlier than|until|up to)\s+{YEAR}\b"
AFTER = NEGATED + rf"\b(?P<w>after|since|newer than|from)\s+{YEAR}(?:\s+on)?\b"


def _decade_start(digits: str) -> int:
    """1980 from "1980", "80"; 2010 from "10" (two digits: 30-90 are the 1900s)."""
    value = int(digits)
    if len(digits) == 4:
        return value
    return 1900 + value if value >= 30 else 2000 + value


def _years(reading: _Reading) -> None:
    for m in reading.take(YEAR_SPAN):
        low, high = sorted((int(m["y"]), int(m["z"])))
        reading.narrow("year", low, high, m[0])
    for m in reading.take(DECADE):
        start = _decade_start(m["d"])
        reading.narrow("year", start, start + 9, m[0])
    for m in reading.take(BEFORE):
        y = int(m["y"])
        if m["neg"]:  # "nothing before 1990": 1990 and later
            reading.narrow("year", y, float("inf"), m[0])
        else:
            last = y if m["w"] in ("until", "up to") else y - 1
            reading.narrow("year", float("-inf"), last, m[0])
    for m in reading.take(AFTER):
        y = int(m["y"])
        if m["neg"]:  # "nothing after 2000": 2000 and earlier
            reading.narrow("year", float("-inf"), y, m[0])
        else:
            first = y if m["w"] in ("since", "from") else y + 1
            reading.narrow("year", first, float("inf"), m[0])


BPM_SPAN = r"\b(?:between\s+)?(?P<a>\d{2,3})\s*(?:and|to|-)\s*(?P<b>\d{2,3})\s*bpm\b"
BPM = r"\b(?:around\s+|about\s+|at\s+)?(?P<a>\d{2,3})\s*bpm\b"
# Case matters here: "in A minor" is a key, "in a minute" is not.
KEY = r"\bin\s+(?P<k>[A-G](?:#|b|♯|♭)?(?:\s*(?:major|minor|maj|min)\b|m\b)?)"
NEGATIVE = (
    r"\b(?:no|without|nothing with|but not|except|minus|avoid)\s+"
    r"(?P<what>[^\W\d_][\w' -]*?)(?=\s*(?:,|;|\.|!|\?|\band\b|\bbut\b|$))"
)


def _tempo_and_key(reading: _Reading) -> None:
    for m in reading.take(BPM_SPAN):
        low, high = sorted((float(m["a"]), float(m["b"])))
        reading.narrow("bpm", low, high, m[0])
    for m in reading.take(BPM):
        reading.narrow("bpm", float(m["a"]) - 5, float(m["a"]) + 5, m[0])
    for m in re.finditer(KEY, reading.rest):
        reading.values["key"] = m["k"].strip()
        reading.understood.append(f"{m[0].strip()} -> key {m['k'].strip()}")
    reading.rest = re.sub(KEY, " , ", reading.rest)


def _negatives(reading: _Reading) -> None:
    for m in reading.take(NEGATIVE):
        what = m["what"].strip()
        reading.negatives.append(what)
        reading.understood.append(f"{m[0].strip()} -> avoid {what!r}")


def _plan(reading: _Reading, prompt: str | None) -> InstantPlan:
    ranges = {
        name: (max(low, 0.0), min(high, {"bpm": 300.0, "energy": 1.0}.get(name, 3000.0)))
        for name, (low, high) in reading.ranges.items()
    }
    filters = TrackFilters(
        **{n: (int(a), int(b)) if n == "year" else (a, b) for n, (a, b) in ranges.items()},
        key=reading.values.get("key"),  # type: ignore[arg-type]
    )
    return InstantPlan(
        prompt=prompt,
        negative_prompts=reading.negatives,
        filters=filters if filters.model_dump(exclude_none=True) else None,
        minutes=reading.values.get("minutes"),  # type: ignore[arg-type]
        count=reading.values.get("count"),  # type: ignore[arg-type]
        max_per_artist=reading.values.get("max_per_artist"),  # type: ignore[arg-type]
        understood=reading.understood,
        warnings=reading.warnings,
    )
