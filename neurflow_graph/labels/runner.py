"""Ask a list of requests: the cache first, then the endpoint, within a budget and a concurrency limit.

* cached requests are answered from :class:`ResponseCache` and cost nothing;
* at most ``max_requests`` of the others are sent (``None``: all), ``concurrency`` at a time; each
  answer is cached the moment it arrives, so an interrupted run resumes where it stopped;
* a :class:`RequestFailed` (429/5xx/timeout after the client's retries) is recorded and the
  others go on; an :class:`EndpointError` (401, unreachable, unknown model) or Ctrl-C cancels
  what has not started and propagates. In every case ``outcomes`` (the caller's list) holds
  everything answered so far;
* with ``dry_run_dir`` nothing is sent: each request that would be sent is written there as the
  exact JSON body, with its images beside it as PNG files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurflow_graph.errors import InputError
from neurflow_graph.fileio import atomic_write
from neurflow_graph.labels.cache import Reply, ResponseCache
from neurflow_graph.labels.client import RequestFailed
from neurflow_graph.labels.requests import ChatRequest

CACHED, SENT, FAILED, UNSENT, DRY_RUN = "cached", "sent", "failed", "unsent", "dry-run"


@dataclass
class Outcome:
    request: ChatRequest
    status: str  # cached | sent | failed | unsent (over budget) | dry-run
    reply: Reply | None = None
    error: str | None = None


@dataclass
class Totals:
    """Counts per status and token usage (``sent`` = tokens paid in this run, ``cached`` = earlier runs')."""

    counts: dict[str, int] = field(default_factory=dict)
    sent_tokens: dict[str, int] = field(default_factory=dict)
    cached_tokens: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, outcomes: Sequence[Outcome]) -> "Totals":
        t = cls()
        for o in outcomes:
            t.counts[o.status] = t.counts.get(o.status, 0) + 1
            if o.reply is not None:
                bucket = t.cached_tokens if o.status == CACHED else t.sent_tokens
                for k, v in o.reply.usage.items():
                    bucket[k] = bucket.get(k, 0) + int(v)
        return t

    def line(self) -> str:
        c = self.counts
        parts = [f"{c.get(SENT, 0)} sent", f"{c.get(CACHED, 0)} from the cache"]
        for status, words in ((FAILED, "failed"), (UNSENT, "not sent (budget)"), (DRY_RUN, "written (dry run)")):
            if c.get(status):
                parts.append(f"{c[status]} {words}")
        tok = self.sent_tokens
        usage = (f"tokens this run: {tok.get('prompt_tokens', 0)} prompt + {tok.get('completion_tokens', 0)} "
                 f"completion = {tok.get('total_tokens', tok.get('prompt_tokens', 0) + tok.get('completion_tokens', 0))}")
        cached = self.cached_tokens.get("total_tokens")
        if cached:
            usage += f" (cached answers had cost {cached})"
        return "requests: " + ", ".join(parts) + "; " + usage


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60]


def write_dry_run(requests: Sequence[ChatRequest], directory: str | Path) -> Path:
    """Write each request's exact body (``NNNN-kind-layer-gid.json``) and its images (``images/<sha256>.png``),
    plus ``index.json`` listing them; return the directory."""
    out = Path(directory)
    (out / "images").mkdir(parents=True, exist_ok=True)
    index = []
    for i, r in enumerate(requests, start=1):
        name = f"{i:04d}-{r.kind}-{_safe(str(r.subject.get('layer')))}-{r.subject.get('gid')}.json"
        body = r.body()
        atomic_write(out / name, lambda f, body=body: json.dump(body, f, indent=1, ensure_ascii=False), mode="w")
        for im in r.images:
            target = out / "images" / f"{im.sha256}.png"
            if not target.exists():
                atomic_write(target, lambda f, im=im: f.write(im.png))
        index.append({"file": name, "kind": r.kind, "subject": r.subject, "key": r.key,
                      "prompt_version": r.prompt_version, "images": [f"images/{h}.png" for h in r.image_hashes],
                      "bytes": len(json.dumps(body))})
    atomic_write(out / "index.json", lambda f: json.dump(index, f, indent=1, ensure_ascii=False), mode="w")
    return out


def execute(requests: Sequence[ChatRequest], *, cache: ResponseCache, outcomes: list[Outcome],
            complete: Callable[[], Callable[[ChatRequest], Reply]] | None, max_requests: int | None = None,
            concurrency: int = 4, dry_run_dir: str | Path | None = None,
            progress: Callable[[Outcome], Any] | None = None) -> list[Outcome]:
    """Answer ``requests``; append one :class:`Outcome` per request to ``outcomes`` (also returned).

    ``complete()`` makes the function that asks one request (called once, and only when something
    must be sent: a fully cached run needs no API key)."""
    if concurrency < 1:
        raise InputError(f"--concurrency must be at least 1, got {concurrency}")
    if max_requests is not None and max_requests < 0:
        raise InputError(f"--max-requests must be at least 0, got {max_requests}")
    results: dict[int, Outcome] = {}
    todo: list[tuple[int, ChatRequest]] = []
    for i, r in enumerate(requests):
        hit = cache.get(r.key)
        if hit is not None:
            results[i] = Outcome(request=r, status=CACHED, reply=hit)
        else:
            todo.append((i, r))
    unique = list({r.key: r for _, r in todo}.values())  # the same question twice in one run is asked once
    budget = len(unique) if max_requests is None else min(max_requests, len(unique))
    to_send = unique[:budget]
    send_keys = {r.key for r in to_send}
    if dry_run_dir is not None:
        write_dry_run(to_send, dry_run_dir)
        for i, r in todo:
            results[i] = Outcome(request=r, status=DRY_RUN if r.key in send_keys else UNSENT)
        outcomes.extend(results[i] for i in sorted(results))
        return outcomes
    answers: dict[str, Outcome] = {}
    if to_send:
        ask = complete() if complete is not None else None
        if ask is None:
            raise InputError("no endpoint to send requests to")

        def task(r: ChatRequest) -> Reply:
            reply = ask(r)
            cache.put(r.key, reply, request=r)  # cached at once: an interruption keeps every answer received
            return reply

        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="mllm")
        futures: dict[Future[Reply], ChatRequest] = {pool.submit(task, r): r for r in to_send}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    r = futures[f]
                    try:
                        answers[r.key] = Outcome(request=r, status=SENT, reply=f.result())
                    except RequestFailed as e:
                        answers[r.key] = Outcome(request=r, status=FAILED, error=str(e))
                    if progress is not None:
                        progress(answers[r.key])
        except BaseException as e:
            # Ctrl-C: do not wait for requests in flight (they still cache their answers when they
            # arrive); an endpoint error: let them finish, so their answers are stored too
            pool.shutdown(wait=not isinstance(e, KeyboardInterrupt), cancel_futures=True)
            for f, r in futures.items():  # keep what did arrive; the caller stores it before re-raising
                if f.done() and not f.cancelled() and f.exception() is None:
                    answers[r.key] = Outcome(request=r, status=SENT, reply=f.result())
            for i, r in todo:
                o = answers.get(r.key)
                if o is not None and o.reply is not None:
                    results[i] = Outcome(request=r, status=SENT, reply=o.reply)
            outcomes.extend(results[i] for i in sorted(results))
            raise
        pool.shutdown(wait=True)
    for i, r in todo:
        o = answers.get(r.key)
        results[i] = (Outcome(request=r, status=UNSENT) if o is None
                      else Outcome(request=r, status=o.status, reply=o.reply, error=o.error))
    outcomes.extend(results[i] for i in sorted(results))
    return outcomes
