"""A real chat-completions server on loopback for the label tests (stdlib http.server in a thread).

It implements ``POST /v1/chat/completions`` as the ``openai`` client calls it and checks every
request it receives against what the App. G prompts and the run's mosaics say it must be:

* ``Authorization: Bearer <key>`` (else a 401 whose body quotes the key, as OpenAI's does, so a test
  can check the CLI never repeats it);
* the model name;
* the system message is the role description and the first user text one of the prompts, word
  for word (:mod:`neurflow_graph.labels.prompts`);
* every image part is a base64 PNG ``data:`` URL that decodes to one of the images the test
  registered (``images``: sha256 -> bytes, e.g. the mosaics on disk) for its kind.

A violation is recorded in ``violations`` and answered with 400. Replies are scripted by
``script(request) -> Action`` (default: a well-formed answer naming the images' hashes, so a test
can tell which answer landed on which group). Actions: ``("ok", text)``, ``("status", code)``
(429/500/401... with ``retry-after-ms: 1`` so the client's retries stay fast), ``("slow", seconds,
text)`` (answers after ``seconds``, past the client's timeout), ``("close",)`` (drops the
connection: the server "dies" for this request).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from neurflow_graph.labels import prompts


@dataclass
class Seen:
    """One request as the server received it."""

    kind: str
    model: str
    images: list[str]        # sha256 of each decoded image, in order
    texts: list[str]
    attempt: int             # x-stainless-retry-count (0 = first try)
    body: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def key(self) -> tuple[str, ...]:
        return (self.kind, *self.images)


def default_answer(seen: Seen) -> str:
    tags = [h[:10] for h in seen.images]
    if seen.kind == "caption":
        return (f"- **Common features:** tag-{tags[0]}, smooth edges, warm colours\n"
                f"- **Caption:** Mosaic tag-{tags[0]} shows smooth edges in warm colours.")
    if seen.kind == "formation":
        lines = [f"- Group {k} Common Features: tag-{t}, curves" for k, t in enumerate(tags, start=1)]
        lines.append("Feature Evolution:")
        for k, t in enumerate(tags[1:], start=2):
            lines.append(f"- Group {k}: has tag-{t} - match curves in Group 1" if k % 2 == 0
                         else f"- Group {k}: There is no matches")
        lines.append(f"Caption: tag-{tags[0]} forms from curves of its children.")
        return "\n".join(lines)
    return "- Matching images: 1, 2"


Action = tuple


class MLLMServer:
    def __init__(self, *, key: str, model: str, images: dict[str, bytes] | None = None,
                 script: Callable[[Seen], Action] | None = None) -> None:
        self.key = key
        self.model = model
        self.images: dict[str, bytes] = dict(images or {})
        self.script = script or (lambda seen: ("ok", default_answer(seen)))
        self.seen: list[Seen] = []
        self.violations: list[str] = []
        self.usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "MLLMServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    # the kinds of request answered, first attempts only (what the run asked, not the client's retries)
    def asked(self) -> list[Seen]:
        return [s for s in self.seen if s.attempt == 0]

    # ---- checking ------------------------------------------------------------------------
    def _check(self, body: dict[str, Any], headers: Any) -> tuple[Seen | None, str | None]:
        problems: list[str] = []
        if body.get("model") != self.model:
            problems.append(f"model {body.get('model')!r} != {self.model!r}")
        messages = body.get("messages") or []
        if len(messages) != 2 or messages[0].get("role") != "system" or messages[1].get("role") != "user":
            return None, "expected [system, user] messages"
        system = messages[0].get("content")
        content = messages[1].get("content") or []
        texts = [p.get("text") for p in content if p.get("type") == "text"]
        first = texts[0] if texts else None
        if system == prompts.ROLE_DESCRIPTION and first == prompts.CAPTION_PROMPT:
            kind = "caption"
        elif system == prompts.ROLE_DESCRIPTION and first == prompts.FORMATION_PROMPT:
            kind = "formation"
        elif system == prompts.EVALUATION_ROLE and first and first.startswith(prompts.EVALUATION_PROMPT.split("{n}")[0]):
            kind = "evaluation"
        else:
            return None, f"system/first text are not an App. G prompt: {system!r} / {str(first)[:60]!r}"
        hashes = []
        for p in content:
            if p.get("type") != "image_url":
                continue
            url = (p.get("image_url") or {}).get("url", "")
            prefix = "data:image/png;base64,"
            if not url.startswith(prefix):
                problems.append(f"image part is not a PNG data URL: {url[:40]!r}")
                continue
            data = base64.b64decode(url[len(prefix):], validate=True)
            if not data.startswith(b"\x89PNG\r\n\x1a\n"):
                problems.append("image part does not decode to a PNG")
            h = hashlib.sha256(data).hexdigest()
            if kind != "evaluation" and self.images.get(h) != data:
                problems.append(f"image {h[:12]} is not one of the run's mosaics")
            hashes.append(h)
        if kind == "caption" and len(hashes) != 1:
            problems.append(f"caption request with {len(hashes)} images")
        if kind == "formation":
            expected = [prompts.FORMATION_PROMPT] + [prompts.group_heading(k) for k in range(1, len(hashes) + 1)]
            if texts != expected or len(hashes) < 2:
                problems.append(f"formation texts {texts[1:]} do not head groups 1..{len(hashes)}")
        if kind == "evaluation":
            n = len(hashes)
            head = prompts.EVALUATION_PROMPT.split("{caption}")[0].format(n=n)
            if not texts[0].startswith(head) or texts[1:] != [prompts.image_heading(k) for k in range(1, n + 1)]:
                problems.append("evaluation texts do not follow the evaluation prompt")
        attempt = int(headers.get("x-stainless-retry-count", "0") or 0)
        seen = Seen(kind=kind, model=str(body.get("model")), images=hashes, texts=texts, attempt=attempt, body=body)
        return seen, "; ".join(problems) or None

    # ---- serving -------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, code: int, doc: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(doc).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self) -> None:  # noqa: N802
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._post()
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _post(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                    return
                if self.headers.get("Authorization") != f"Bearer {server.key}":
                    given = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                    self._send(401, {"error": {"message": f"Incorrect API key provided: {given}.",
                                               "type": "invalid_request_error", "code": "invalid_api_key"}})
                    return
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._send(400, {"error": {"message": "body is not JSON"}})
                    return
                seen, problem = server._check(body, self.headers)
                if problem or seen is None:
                    with server._lock:
                        server.violations.append(problem or "unreadable request")
                    self._send(400, {"error": {"message": problem}})
                    return
                with server._lock:
                    server.seen.append(seen)
                action = server.script(seen)
                if action[0] == "status":
                    code = int(action[1])
                    self._send(code, {"error": {"message": f"scripted {code}", "type": "scripted"}},
                               {"retry-after-ms": "1"})
                    return
                if action[0] == "close":
                    self.close_connection = True
                    try:
                        self.connection.shutdown(2)
                    except OSError:
                        pass
                    return
                if action[0] == "slow":
                    time.sleep(float(action[1]))
                    text = action[2]
                else:
                    text = action[1]
                self._send(200, {
                    "id": f"chatcmpl-{len(server.seen)}", "object": "chat.completion", "created": int(time.time()),
                    "model": server.model + "-served",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": dict(server.usage),
                })

        return Handler
