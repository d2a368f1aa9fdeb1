"""On-disk response cache: one JSON file per answered request, named by the request's key.

The key (:attr:`ChatRequest.key`) hashes the model name, every text and every image hash, so
a re-run, or a resumed interrupted run, asks nothing twice. Entries are written atomically as
soon as an answer arrives, so an interruption loses at most the requests still in flight.
Only answers are cached; failures (HTTP errors, timeouts) are not, and are asked again.

Layout: ``CACHE_DIR/<key[:2]>/<key>.json`` = ``{"format": "neurflow-mllm-cache", "version": 1,
"key", "kind", "model", "response_model", "text", "usage": {prompt_tokens, completion_tokens,
total_tokens}, "created_at", "subject", "prompt_version", "images"}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from neurflow_graph.fileio import atomic_write

CACHE_FORMAT = "neurflow-mllm-cache"
CACHE_VERSION = 1


@dataclass(frozen=True)
class Reply:
    """The model's answer to one request."""

    text: str
    usage: dict[str, int] = field(default_factory=dict)
    response_model: str | None = None
    cached: bool = False


class ResponseCache:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> Reply | None:
        path = self._path(key)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None  # unreadable entry: ask again (the new answer replaces it)
        if doc.get("format") != CACHE_FORMAT or doc.get("key") != key or not isinstance(doc.get("text"), str):
            return None
        return Reply(text=doc["text"], usage=dict(doc.get("usage") or {}), response_model=doc.get("response_model"),
                     cached=True)

    def put(self, key: str, reply: Reply, *, request: Any) -> Path:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "key": key, "kind": request.kind,
               "model": request.model, "response_model": reply.response_model, "text": reply.text,
               "usage": reply.usage, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "subject": request.subject, "prompt_version": request.prompt_version,
               "images": request.image_hashes}
        return atomic_write(path, lambda f: json.dump(doc, f, indent=1, ensure_ascii=False), mode="w")

    def __len__(self) -> int:
        return sum(1 for _ in self.dir.glob("*/*.json")) if self.dir.is_dir() else 0
