"""The App. G prompts word for word, and the answer parsers on well-formed, decorated and broken answers.

The oracle for the prompts is the paper's App. G text (tests/data/neurflow_appendix_g.txt, taken
from the PDF's text as it is, blank lines and ``\\rightarrow`` included), not the module under test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from neurflow_graph.labels import prompts
from neurflow_graph.labels.parsing import parse_caption, parse_formation, parse_matching

PAPER = (Path(__file__).parent / "data" / "neurflow_appendix_g.txt").read_text()


def _words(text: str) -> str:
    """The text as the paper's words: the PDF's arrow spelled as the paper renders it, quotes dropped,
    whitespace collapsed."""
    text = text.replace("\\rightarrow", "→").replace('"', "")
    return " ".join(text.split())


def _between(start: str, end: str | None) -> str:
    body = PAPER[PAPER.index(start) + len(start):]
    return body[:body.index(end)] if end else body


@pytest.mark.parametrize("name,start,end", [
    ("ROLE_DESCRIPTION", "Role descriptions:", "Main prompt:"),
    ("MAIN_PROMPT", "Main prompt:", "G.2 ANSWER FORM"),
    ("CAPTION_ANSWER_FORM", "Answer form for single concept captioning:", "Answer form for describing NGC's formation:"),
    ("FORMATION_ANSWER_FORM", "Answer form for describing NGC's formation:", None),
])
def test_prompt_texts_are_the_papers_word_for_word(name: str, start: str, end: str | None) -> None:
    assert _words(getattr(prompts, name)) == _words(_between(start, end))


def test_prompts_assemble_as_role_plus_main_plus_answer_form() -> None:
    assert prompts.CAPTION_PROMPT == prompts.MAIN_PROMPT + "\n\n" + prompts.CAPTION_ANSWER_FORM
    assert prompts.FORMATION_PROMPT == prompts.MAIN_PROMPT + "\n\n" + prompts.FORMATION_ANSWER_FORM
    assert prompts.PROMPT_VERSION and prompts.EVALUATION_PROMPT_VERSION != prompts.PROMPT_VERSION
    assert "→" in prompts.FORMATION_ANSWER_FORM and "\\rightarrow" not in prompts.FORMATION_ANSWER_FORM


def test_caption_answer_plain_and_decorated() -> None:
    plain = parse_caption("- Common features: yellow colour, black stripes; oval shape\n"
                          "- Caption: Yellow ovals with black stripes.")
    assert plain.ok and plain.features == ["yellow colour", "black stripes", "oval shape"]
    assert plain.caption == "Yellow ovals with black stripes."
    assert plain.label == "yellow colour; black stripes; oval shape"
    decorated = parse_caption("# Answer form:\n**Common features:**\n  * red discs\n  * black dots\n\n"
                              "**Caption:** Red discs\nwith black dots.")
    assert decorated.ok and decorated.features == ["red discs", "black dots"]
    assert decorated.caption == "Red discs with black dots."


@pytest.mark.parametrize("text,error", [
    ("", "empty answer"),
    ("I see some pictures of bees.", "no 'Common features:' and no 'Caption:' line"),
    ("- Common features: stripes", "no 'Caption:' line"),
    ("- Caption: stripes everywhere", "no 'Common features:' line"),
])
def test_caption_answer_malformed(text: str, error: str) -> None:
    parsed = parse_caption(text)
    assert not parsed.ok and parsed.error == error


FORMATION = """\
- Group 1 Common Features: black and yellow stripes, oval body
- Group 2 Common Features: yellow patches
- Group 3 Common Features: dark bands
  - thin edges

Feature Evolution:
- Group 2: has yellow patches - match yellow body in Group 1
- Group 3: There is no matches

Caption: Yellow patches and dark bands combine into a striped oval.
"""


def test_formation_answer() -> None:
    parsed = parse_formation(FORMATION, n_groups=3)
    assert parsed.ok, parsed.error
    assert parsed.group_features == {1: ["black and yellow stripes", "oval body"], 2: ["yellow patches"],
                                     3: ["dark bands", "thin edges"]}
    assert [(e.group, e.matched) for e in parsed.evolution] == [(2, True), (3, False)]
    assert parsed.evolution_of(2).text == "has yellow patches - match yellow body in Group 1"
    assert parsed.caption == "Yellow patches and dark bands combine into a striped oval."


def test_formation_answer_malformed() -> None:
    assert parse_formation("Nice pictures.", n_groups=3).error == "no 'Feature Evolution' lines"
    missing = parse_formation(FORMATION, n_groups=4)
    assert not missing.ok and missing.error == "no feature evolution for group(s) 4"
    extra = parse_formation(FORMATION, n_groups=2)
    assert not extra.ok and "only 2 were sent" in extra.error
    no_caption = parse_formation(FORMATION.split("Caption:")[0], n_groups=3)
    assert not no_caption.ok and no_caption.error == "no 'Caption:' line"


def test_matching_answer() -> None:
    assert parse_matching("- Matching images: 1, 3 and 4", n=5).matching == {1, 3, 4}
    assert parse_matching("**Matching images:** none", n=5).matching == frozenset()
    assert parse_matching("- Matching images: 2, 9", n=5).error == "image numbers [9] outside 1..5"
    assert not parse_matching("They all match.", n=5).ok


def test_evaluation_prompt_names_the_caption_and_count() -> None:
    text = prompts.evaluation_prompt(caption="Red discs.", n=6)
    assert "Caption: Red discs." in text and "numbered 1 to 6" in text
    assert re.search(r"Matching images:", text)


def test_ground_truth_agreement_is_lexical_at_word_starts() -> None:
    from neurflow_graph.labels.evaluate import ground_truth_agreement, names_concept

    assert names_concept("Yellow ovals with black stripes.", "texture:stripes") == ["stripe"]
    assert names_concept("Striped yellow bodies", "texture:stripes") == ["stripe", "striped"]
    assert names_concept("A covered red disc", "color:red") == ["red"]
    assert names_concept("Scarlet, covered shapes", "color:red") == []  # "covered" holds "red" mid-word
    assert names_concept("grey gravel", "background:gray") == ["grey"]
    rows = ground_truth_agreement(concepts={("b1", 0): "shape:ellipse", ("b1", 1): "object:flower", ("b2", 0): "sky"},
                                  texts={("b1", 0): "oval yellow body", ("b1", 1): "green grass"})
    assert [(a.gid, a.agrees) for a in rows] == [(0, True), (1, False)]  # b2/0 has no label: left out
