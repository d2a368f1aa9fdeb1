"""Parse the model's answers to the App. G answer forms (and to the evaluation prompt).

Parsers never raise on what a model wrote: they return a result with ``ok = False`` and the
reason in ``error``, and the caller keeps the raw text. Markdown decoration models like to add
(``**bold**``, ``#`` headings, bullet marks) is ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_DECOR = re.compile(r"[*_`]+")
_BULLET = re.compile(r"^\s*(?:[-*•+]|\d+[.)])\s+")
_NO_MATCH = re.compile(r"\bthere\s+(?:is|are)\s+no\s+match", re.I)


def _clean(line: str) -> str:
    line = _DECOR.sub("", line).strip()
    line = re.sub(r"^#+\s*", "", line)
    return _BULLET.sub("", line).strip()


def _items(text: str) -> list[str]:
    """A feature list written inline ("a, b; c") or as bullet lines."""
    out: list[str] = []
    for line in text.splitlines():
        line = _clean(line)
        if not line:
            continue
        out.extend(p.strip(" .") for p in re.split(r"[;,]", line) if p.strip(" ."))
    return out


@dataclass(frozen=True)
class CaptionAnswer:
    """``- Common features: ...`` / ``- Caption: ...`` (App. G.2, single concept)."""

    ok: bool
    features: list[str] = field(default_factory=list)
    caption: str | None = None
    error: str | None = None

    @property
    def label(self) -> str | None:
        """A short label: the common features, joined by ``"; "``."""
        return "; ".join(self.features) if self.features else None


def _sections(text: str, heads: dict[str, re.Pattern[str]]) -> dict[str, list[str]]:
    """Split ``text`` into named sections at lines matching a head pattern (text after the head kept)."""
    out: dict[str, list[str]] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = _clean(raw)
        for name, pat in heads.items():
            m = pat.match(line)
            if m:
                current = name
                out.setdefault(name, []).append(line[m.end():].strip())
                break
        else:
            if current is not None:
                out[current].append(raw)
    return out


_CAPTION_HEADS = {
    "features": re.compile(r"common\s+features?\s*:", re.I),
    "caption": re.compile(r"caption\s*:", re.I),
}


def parse_caption(text: str) -> CaptionAnswer:
    if not isinstance(text, str) or not text.strip():
        return CaptionAnswer(ok=False, error="empty answer")
    sec = _sections(text, _CAPTION_HEADS)
    features = _items("\n".join(sec.get("features", [])))
    caption = " ".join(_clean(x) for x in sec.get("caption", []) if _clean(x)).strip() or None
    if not features and caption is None:
        return CaptionAnswer(ok=False, error="no 'Common features:' and no 'Caption:' line")
    if caption is None:
        return CaptionAnswer(ok=False, features=features, error="no 'Caption:' line")
    if not features:
        return CaptionAnswer(ok=False, caption=caption, error="no 'Common features:' line")
    return CaptionAnswer(ok=True, features=features, caption=caption)


@dataclass(frozen=True)
class Evolution:
    """One ``- Group k: ...`` line of the Feature Evolution section (k >= 2)."""

    group: int
    text: str
    matched: bool  # False when the model said "There is no matches"


@dataclass(frozen=True)
class FormationAnswer:
    """The App. G.2 formation form: per-group common features, feature evolution, caption."""

    ok: bool
    group_features: dict[int, list[str]] = field(default_factory=dict)
    evolution: list[Evolution] = field(default_factory=list)
    caption: str | None = None
    error: str | None = None

    def evolution_of(self, group: int) -> Evolution | None:
        return next((e for e in self.evolution if e.group == group), None)


_GROUP_FEATURES = re.compile(r"group\s+(\d+)\s+common\s+features?\s*:\s*(.*)$", re.I)
_EVOLUTION_HEAD = re.compile(r"feature\s+evolution\s*:?\s*$", re.I)
_EVOLUTION_LINE = re.compile(r"group\s+(\d+)\s*[:\-–]\s*(.*)$", re.I)
_CAPTION_LINE = re.compile(r"caption\s*:\s*(.*)$", re.I)


def parse_formation(text: str, *, n_groups: int) -> FormationAnswer:
    """Parse a formation answer for Group 1 (the group) + Groups 2..``n_groups`` (its children)."""
    if not isinstance(text, str) or not text.strip():
        return FormationAnswer(ok=False, error="empty answer")
    features: dict[int, list[str]] = {}
    evolution: dict[int, Evolution] = {}
    caption_lines: list[str] = []
    section = "features"
    last_feature: int | None = None
    for raw in text.splitlines():
        line = _clean(raw)
        if not line:
            continue
        if _EVOLUTION_HEAD.match(line):
            section, last_feature = "evolution", None
            continue
        m = _CAPTION_LINE.match(line)
        if m:
            section = "caption"
            if m.group(1).strip():
                caption_lines.append(m.group(1).strip())
            continue
        if section == "caption":
            caption_lines.append(line)
            continue
        m = _GROUP_FEATURES.match(line)
        if m:
            last_feature = int(m.group(1))
            features[last_feature] = _items(m.group(2))
            continue
        if section == "evolution":
            m = _EVOLUTION_LINE.match(line)
            if m:
                k, body = int(m.group(1)), m.group(2).strip()
                if k >= 2 and k not in evolution:
                    evolution[k] = Evolution(group=k, text=body, matched=not _NO_MATCH.search(body))
            continue
        if last_feature is not None and line != "...":  # a feature list continued on bullet lines
            features[last_feature].extend(_items(line))
    caption = " ".join(caption_lines).strip() or None
    ordered = [evolution[k] for k in sorted(evolution)]
    missing = [k for k in range(2, n_groups + 1) if k not in evolution]
    extra = [k for k in evolution if k > n_groups]
    result = dict(group_features=features, evolution=[e for e in ordered if e.group <= n_groups], caption=caption)
    if not evolution:
        return FormationAnswer(ok=False, error="no 'Feature Evolution' lines", **result)
    if missing:
        return FormationAnswer(ok=False, error=f"no feature evolution for group(s) {', '.join(map(str, missing))}",
                               **result)
    if extra:
        return FormationAnswer(ok=False, error=f"feature evolution names group(s) {', '.join(map(str, extra))} "
                               f"but only {n_groups} were sent", **result)
    if caption is None:
        return FormationAnswer(ok=False, error="no 'Caption:' line", **result)
    return FormationAnswer(ok=True, **result)


@dataclass(frozen=True)
class MatchAnswer:
    """``- Matching images: 1, 4, 5`` (the evaluation prompt)."""

    ok: bool
    matching: frozenset[int] = frozenset()
    error: str | None = None


_MATCHING = re.compile(r"matching\s+images?\s*:\s*(.*)$", re.I)


def parse_matching(text: str, *, n: int) -> MatchAnswer:
    if not isinstance(text, str) or not text.strip():
        return MatchAnswer(ok=False, error="empty answer")
    for raw in text.splitlines():
        m = _MATCHING.match(_clean(raw))
        if not m:
            continue
        body = m.group(1).strip()
        if re.fullmatch(r"(?i)none\.?|no images?\.?|-", body) or not body:
            return MatchAnswer(ok=True, matching=frozenset())
        numbers = [int(x) for x in re.findall(r"\d+", body)]
        if not numbers:
            return MatchAnswer(ok=False, error=f"no image numbers in {body!r}")
        bad = sorted({k for k in numbers if not 1 <= k <= n})
        if bad:
            return MatchAnswer(ok=False, error=f"image numbers {bad} outside 1..{n}")
        return MatchAnswer(ok=True, matching=frozenset(numbers))
    return MatchAnswer(ok=False, error="no 'Matching images:' line")
