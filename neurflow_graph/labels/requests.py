"""Chat-completions requests for captioning, formation and evaluation: plain data, no I/O.

A request is the exact JSON body the ``openai`` client posts to ``/chat/completions`` (minus
what the client adds itself, e.g. ``stream``): ``model`` and ``messages``, the role description
as the system message and one user message of text and ``image_url`` parts, each image a
base64 PNG ``data:`` URL. Its cache key hashes the model name, every text sent and the sha256 of
every image, in order: an identical question is never asked twice.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from neurflow_graph.labels import prompts


@dataclass(frozen=True)
class Image:
    """One PNG sent to the model; ``sha256`` is the hash of ``png`` (the mosaic file's bytes)."""

    png: bytes
    sha256: str

    @classmethod
    def from_png(cls, png: bytes) -> "Image":
        return cls(png=png, sha256=hashlib.sha256(png).hexdigest())

    def data_url(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True)
class ChatRequest:
    """One question to the model.

    ``kind`` is ``caption``, ``formation`` or ``evaluation``; ``subject`` names what it is about
    (``layer``, ``gid``, and for formation the children as ``[layer, gid, weight]`` rows).
    """

    kind: str
    model: str
    system: str
    parts: tuple[tuple[str, Any], ...]  # ("text", str) | ("image", Image), in order
    prompt_version: str
    subject: dict[str, Any] = field(default_factory=dict)

    @property
    def images(self) -> list[Image]:
        return [p for t, p in self.parts if t == "image"]

    @property
    def image_hashes(self) -> list[str]:
        return [im.sha256 for im in self.images]

    @property
    def texts(self) -> list[str]:
        return [self.system] + [p for t, p in self.parts if t == "text"]

    @property
    def key(self) -> str:
        """sha256 of (model, every text, every image hash), in order."""
        payload = {"model": self.model, "texts": self.texts, "images": self.image_hashes}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def messages(self) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        for t, p in self.parts:
            if t == "text":
                content.append({"type": "text", "text": p})
            else:
                content.append({"type": "image_url", "image_url": {"url": p.data_url()}})
        return [{"role": "system", "content": self.system}, {"role": "user", "content": content}]

    def body(self) -> dict[str, Any]:
        """The JSON body posted to ``/chat/completions``."""
        return {"model": self.model, "messages": self.messages()}


def caption_request(*, model: str, layer: str, gid: int, mosaic: Image) -> ChatRequest:
    """App. G captioning: role + main prompt + single-concept answer form, then the group's mosaic."""
    return ChatRequest(kind="caption", model=model, system=prompts.ROLE_DESCRIPTION,
                       parts=(("text", prompts.CAPTION_PROMPT), ("image", mosaic)),
                       prompt_version=prompts.PROMPT_VERSION, subject={"layer": layer, "gid": int(gid)})


def formation_request(*, model: str, layer: str, gid: int, mosaic: Image,
                      children: list[tuple[str, int, float, Image]]) -> ChatRequest:
    """App. G formation: Group 1 = the group's mosaic, Groups 2..N = its children's, strongest first."""
    if not children:
        raise ValueError("a formation request needs at least one child group")
    parts: list[tuple[str, Any]] = [("text", prompts.FORMATION_PROMPT),
                                    ("text", prompts.group_heading(1)), ("image", mosaic)]
    for k, (_, _, _, image) in enumerate(children, start=2):
        parts += [("text", prompts.group_heading(k)), ("image", image)]
    subject = {"layer": layer, "gid": int(gid),
               "children": [[c_layer, int(c_gid), float(w)] for c_layer, c_gid, w, _ in children]}
    return ChatRequest(kind="formation", model=model, system=prompts.ROLE_DESCRIPTION, parts=tuple(parts),
                       prompt_version=prompts.PROMPT_VERSION, subject=subject)


def evaluation_request(*, model: str, layer: str, gid: int, caption: str, images: list[Image],
                       positives: list[bool]) -> ChatRequest:
    """The label-quality check: the caption, then ``images`` numbered 1..n (``positives`` marks the
    group's own held-out exemplars; it is kept in ``subject``, never sent)."""
    if len(images) != len(positives) or not images:
        raise ValueError("evaluation needs one positive/negative flag per image, and at least one image")
    parts: list[tuple[str, Any]] = [("text", prompts.evaluation_prompt(caption=caption, n=len(images)))]
    for k, image in enumerate(images, start=1):
        parts += [("text", prompts.image_heading(k)), ("image", image)]
    return ChatRequest(kind="evaluation", model=model, system=prompts.EVALUATION_ROLE, parts=tuple(parts),
                       prompt_version=prompts.EVALUATION_PROMPT_VERSION,
                       subject={"layer": layer, "gid": int(gid), "positives": [bool(p) for p in positives]})
