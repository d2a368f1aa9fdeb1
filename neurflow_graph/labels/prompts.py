"""The prompts sent to the multimodal LLM, in one versioned file.

Everything under "Appendix G" is the paper's text word for word (NeurFlow, ICLR 2025, App. G:
*role description* + *main prompt* + *answer form*). Two liberties, both typographical: the
PDF text's blank lines between bullet items are dropped, and its ``\\rightarrow`` (a rendered
arrow in the paper) is written ``→``. ``tests/test_labels_prompts.py`` checks these texts
against the App. G excerpt kept in ``tests/data/neurflow_appendix_g.txt``.

The paper does not give its label-quality check; :data:`EVALUATION_PROMPT` is this project's own
wording (``EVALUATION_PROMPT_VERSION``), kept here so every text sent to a model is in one place.

Bump :data:`PROMPT_VERSION` (or :data:`EVALUATION_PROMPT_VERSION`) whenever a text changes: the
version is stored with every annotation, and the response cache is keyed by the text itself,
so a changed prompt is never answered from an old cache entry.
"""

from __future__ import annotations

PROMPT_VERSION = "neurflow-appG-1"
EVALUATION_PROMPT_VERSION = "neurflow-graph-eval-1"

# ---- Appendix G.1: role description and main prompt (the same for both tasks) ---------------

ROLE_DESCRIPTION = "Act as an Image Captioning Language Model."

MAIN_PROMPT = """\
# Core Responsibilities:
- Analyze a set of similar images to identify common features.
- Generate descriptive captions that highlight these common features.
- You must adapt to detect both simple and complex features.

Important notes:
- You don't have to generate captions for every image, focus on the common features.
- Outliers exist in the images, you could ignore them if they are not relevant to the common theme.
- You should describe the images with objective visual features, not subjective (like powerful or beautiful or scary etc., because these are only your opinion).
- You should only describe visual features, not the context or the story behind the images.
- You should keep a succinct caption, keep it one or two sentences long, that only describe a few most common features.

Role Summary:
Your role is to provide accurate and coherent captions for a set of similar images by identifying and describing common features. These features can range from simple elements like edges and colors to complex patterns such as a specific object in a particular setting."""

# ---- Appendix G.2: answer forms -------------------------------------------------------------

# "Answer form for single concept captioning"
CAPTION_ANSWER_FORM = """\
# Answer form:
- Common features: a list of features
- Caption: your caption in one or two sentences"""

# "Answer form for describing NGC's formation": the key notes, then the quoted step-by-step form.
FORMATION_ANSWER_FORM = """\
Key note of the input:
- There are many different groups of images, make sure you get the number of groups right.
- Each group of images has a common feature.
- The higher level feature is the first group.
- Other groups are lower level features that combine to form the higher level feature of the first group.

Key note of the output:
- You should not only focus on the common features of the images but also describe how the features from the lower level groups combine to form the higher-level feature of the first group.
- You should focus on the common features that shared among both the high and low level.

# Step by step:
- Find the lists of common features in Group 2, ..., N.
- For each feature from those lists: match it with the features in Group 1.
- Some of the features in the lists might have no matches: they might be combined with others to form new features, match the features in Group 1 with some simple combination of the features in Group 2, ..., N (e.g. blue and green → blue-green, multiple curve orientations → a circle, two edges with different orientations → an angle, etc.).
- If you don't find any visual features that match, please don't describe features that is not presented, instead, you can say "There is no matches".
- From the matched features, derive the common features in Group 1.
- Generate caption for Group 1.

Answer form:
- Group 1 Common Features: list of common features
- Group 2 Common Features: list of common features
- ...
- Group N Common Features: list of common features

Feature Evolution:
- Group 2: has feature A - match feature A in Group 1 (for Group 2 to N, if there is no matches, please say "There is no matches")
- ...
- Group N: has feature B - match feature B in Group 1

Caption: one or two sentences capturing the common features and their evolution"""

# The paper's structure: Role description + Main prompt + Answer form. The role goes in the
# system message; main prompt and answer form, joined by a blank line, open the user message.
CAPTION_PROMPT = MAIN_PROMPT + "\n\n" + CAPTION_ANSWER_FORM
FORMATION_PROMPT = MAIN_PROMPT + "\n\n" + FORMATION_ANSWER_FORM


def group_heading(k: int) -> str:
    """The text part placed before the k-th group's mosaic in a formation request (1 = the group)."""
    return f"Group {k}:"


# ---- label quality (this project's wording, not the paper's) --------------------------------

EVALUATION_ROLE = "Act as a careful visual inspector who checks images against a caption."

EVALUATION_PROMPT = """\
A caption describes the common visual features of a set of images. Below, after the caption, are {n} \
new images numbered 1 to {n}. Some of them show the features the caption describes; the others do not.

Caption: {caption}

Decide for each image whether it shows the features in the caption. Judge only visible features.

# Answer form:
- Matching images: the numbers of the matching images, separated by commas (write none if no image matches)"""


def evaluation_prompt(*, caption: str, n: int) -> str:
    return EVALUATION_PROMPT.format(caption=caption, n=n)


def image_heading(k: int) -> str:
    """The text part placed before the k-th image of an evaluation request."""
    return f"Image {k}:"
