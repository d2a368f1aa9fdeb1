"""The openai client wrapper and the runner against a real HTTP server on loopback (tests/mllm_server.py).

No network: the server is started by the test on 127.0.0.1. The images are small PNGs made here;
the server checks every request (model, App. G texts, images decode to the ones registered).
"""

from __future__ import annotations

import io
import json
import threading

import pytest
from PIL import Image as PILImage

from mllm_server import MLLMServer, default_answer
from neurflow_graph.labels.cache import ResponseCache
from neurflow_graph.labels.client import ChatClient, EndpointAuthError, EndpointConfig, EndpointError
from neurflow_graph.labels.requests import Image, caption_request, formation_request
from neurflow_graph.labels.runner import CACHED, DRY_RUN, FAILED, SENT, UNSENT, Totals, execute

KEY = "sk-test-SECRET-1234567890"
MODEL = "test-vision-model"


def png(seed: int) -> bytes:
    im = PILImage.new("RGB", (8, 8), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


IMAGES = [Image.from_png(png(i)) for i in range(8)]


def captions(n: int = 6) -> list:
    return [caption_request(model=MODEL, layer="b1", gid=i, mosaic=IMAGES[i]) for i in range(n)]


def config(url: str, **kw) -> EndpointConfig:
    return EndpointConfig(base_url=url, api_key=KEY, model=MODEL, timeout=kw.pop("timeout", 2.0),
                          max_retries=kw.pop("max_retries", 2))


def server(**kw) -> MLLMServer:
    return MLLMServer(key=KEY, model=MODEL, images={im.sha256: im.png for im in IMAGES}, **kw)


def run(requests, cfg, cache_dir, **kw):
    clients = []

    def make():
        clients.append(ChatClient(cfg))
        return clients[-1].complete

    outcomes: list = []
    try:
        execute(requests, cache=ResponseCache(cache_dir), outcomes=outcomes, complete=make, **kw)
    finally:
        for c in clients:
            c.close()
    return outcomes


def test_answers_cached_and_second_run_sends_nothing(tmp_path) -> None:
    with server() as srv:
        first = run(captions(), config(srv.url), tmp_path / "cache", concurrency=3)
        assert srv.violations == []
        assert [o.status for o in first] == [SENT] * 6
        assert len(srv.seen) == 6
        for o in first:  # each answer is the one for its own image
            assert f"tag-{o.request.images[0].sha256[:10]}" in o.reply.text
        totals = Totals.of(first)
        assert totals.sent_tokens == {"prompt_tokens": 600, "completion_tokens": 120, "total_tokens": 720}
        second = run(captions(), config(srv.url), tmp_path / "cache", concurrency=3)
        assert len(srv.seen) == 6, "the second run asked the server again"
        assert [o.status for o in second] == [CACHED] * 6
        assert [o.reply.text for o in second] == [o.reply.text for o in first]
        assert "720" in Totals.of(second).line() and "0 sent" in Totals.of(second).line()


def test_cache_key_covers_model_prompt_and_images(tmp_path) -> None:
    a = caption_request(model=MODEL, layer="b1", gid=0, mosaic=IMAGES[0])
    assert a.key == caption_request(model=MODEL, layer="other", gid=9, mosaic=IMAGES[0]).key  # same question
    assert a.key != caption_request(model="other-model", layer="b1", gid=0, mosaic=IMAGES[0]).key
    assert a.key != caption_request(model=MODEL, layer="b1", gid=0, mosaic=IMAGES[1]).key
    f = formation_request(model=MODEL, layer="b2", gid=0, mosaic=IMAGES[0],
                          children=[("b1", 0, 0.5, IMAGES[1]), ("b1", 1, 0.2, IMAGES[2])])
    g = formation_request(model=MODEL, layer="b2", gid=0, mosaic=IMAGES[0],
                          children=[("b1", 1, 0.5, IMAGES[2]), ("b1", 0, 0.2, IMAGES[1])])
    assert f.key != g.key != a.key  # the children's order is part of the question


def test_concurrency_limit_respected(tmp_path) -> None:
    with server(script=lambda s: ("slow", 0.15, default_answer(s))) as srv:
        out = run(captions(6), config(srv.url), tmp_path / "c", concurrency=2)
    assert [o.status for o in out] == [SENT] * 6
    assert srv.max_in_flight == 2


def test_retries_on_429_500_and_a_slow_reply(tmp_path) -> None:
    """First attempts fail (429, 500, a reply slower than the timeout); the client's retries recover."""
    plan = {0: ("status", 429), 1: ("status", 500), 2: ("slow", 1.5, None)}

    def script(seen):
        gid = [im.sha256 for im in IMAGES].index(seen.images[0])
        action = plan.get(gid) if seen.attempt == 0 else None
        if action and action[0] == "slow":
            return ("slow", action[1], default_answer(seen))
        return action or ("ok", default_answer(seen))

    with server(script=script) as srv:
        out = run(captions(4), config(srv.url, timeout=0.5, max_retries=2), tmp_path / "c", concurrency=4)
    assert srv.violations == []
    assert [o.status for o in out] == [SENT] * 4
    attempts = {}
    for s in srv.seen:
        attempts[s.images[0]] = attempts.get(s.images[0], 0) + 1
    assert [attempts[IMAGES[i].sha256] for i in range(4)] == [2, 2, 2, 1]


def test_exhausted_retries_fail_one_request_and_the_others_go_on(tmp_path) -> None:
    def script(seen):
        if seen.images[0] == IMAGES[1].sha256:
            return ("status", 503)
        if seen.images[0] == IMAGES[2].sha256:
            return ("slow", 1.0, default_answer(seen))
        return ("ok", default_answer(seen))

    with server(script=script) as srv:
        out = run(captions(4), config(srv.url, timeout=0.3, max_retries=1), tmp_path / "c", concurrency=4)
        assert [o.status for o in out] == [SENT, FAILED, FAILED, SENT]
        assert "HTTP 503 after 1 retries" in out[1].error and srv.url in out[1].error
        assert "timed out after 0.3 s" in out[2].error
        assert sum(s.images[0] == IMAGES[1].sha256 for s in srv.seen) == 2  # first try + 1 retry
        cache = ResponseCache(tmp_path / "c")
        assert len(cache) == 2, "failures must not be cached"
        again = run(captions(4), config(srv.url, timeout=0.3, max_retries=1), tmp_path / "c", concurrency=4)
    assert [o.status for o in again] == [CACHED, FAILED, FAILED, CACHED]


def test_budget_is_respected_and_the_rest_is_sent_next_time(tmp_path) -> None:
    with server() as srv:
        out = run(captions(6), config(srv.url), tmp_path / "c", max_requests=4, concurrency=3)
        assert [o.status for o in out] == [SENT] * 4 + [UNSENT] * 2
        assert len(srv.seen) == 4
        nothing = run(captions(6), config(srv.url), tmp_path / "c", max_requests=0)
        assert [o.status for o in nothing] == [CACHED] * 4 + [UNSENT] * 2 and len(srv.seen) == 4
        rest = run(captions(6), config(srv.url), tmp_path / "c", max_requests=4)
        assert [o.status for o in rest] == [CACHED] * 4 + [SENT] * 2
        assert len(srv.seen) == 6


def test_401_is_one_error_naming_the_url_never_the_key(tmp_path) -> None:
    with server() as srv:
        cfg = EndpointConfig(base_url=srv.url, api_key="sk-wrong-KEY-999", model=MODEL, timeout=2, max_retries=3)
        with pytest.raises(EndpointAuthError) as e:
            run(captions(3), cfg, tmp_path / "c", concurrency=1)
        assert len(srv.seen) == 0  # refused at the door; 401 is not retried
    message = str(e.value)
    assert srv.url in message and "401" in message
    assert "sk-wrong-KEY-999" not in message and "\n" not in message
    assert "sk-wrong-KEY-999" not in repr(cfg)


def test_unreachable_server_is_one_endpoint_error(tmp_path) -> None:
    with server() as srv:
        url = srv.url
    cfg = EndpointConfig(base_url=url, api_key=KEY, model=MODEL, timeout=1, max_retries=0)
    with pytest.raises(EndpointError, match="cannot reach http://127.0.0.1"):
        run(captions(2), cfg, tmp_path / "c")


def test_no_key_needed_when_everything_is_cached_or_dry(tmp_path) -> None:
    cfg = EndpointConfig(base_url="http://127.0.0.1:9/v1", api_key=None, model=MODEL)
    with pytest.raises(EndpointError, match="OPENAI_API_KEY is not set"):
        run(captions(1), cfg, tmp_path / "c")
    out = run(captions(2), cfg, tmp_path / "c", dry_run_dir=tmp_path / "dry")
    assert [o.status for o in out] == [DRY_RUN] * 2
    index = json.loads((tmp_path / "dry" / "index.json").read_text())
    assert [i["kind"] for i in index] == ["caption", "caption"]
    body = json.loads((tmp_path / "dry" / index[0]["file"]).read_text())
    assert body == captions(1)[0].body()
    assert (tmp_path / "dry" / index[0]["images"][0]).read_bytes() == IMAGES[0].png


def test_interrupted_run_keeps_every_answer_received(tmp_path) -> None:
    """The server drops the connection for one request (it "dies"): the run stops with an endpoint
    error, yet every answer that arrived is cached, and the next run asks only the rest."""
    dead = threading.Event()

    def script(seen):
        if seen.images[0] == IMAGES[3].sha256 and not dead.is_set():
            return ("close",)
        return ("ok", default_answer(seen))

    with server(script=script) as srv:
        cfg = config(srv.url, max_retries=0)
        with pytest.raises(EndpointError):
            run(captions(6), cfg, tmp_path / "c", concurrency=1)
        answered = {s.images[0] for s in srv.seen if s.images[0] != IMAGES[3].sha256}
        # the three before the dead one, and the one the single worker had already started, if any
        assert len(ResponseCache(tmp_path / "c")) == len(answered) and len(answered) in (3, 4), \
            [IMAGES.index(next(i for i in IMAGES if i.sha256 == s.images[0])) for s in srv.seen]
        dead.set()
        n_before = len(srv.seen)
        out = run(captions(6), cfg, tmp_path / "c", concurrency=1)
        assert [o.status for o in out].count(CACHED) == len(answered)
        assert [o.status for o in out].count(SENT) == len(srv.seen) - n_before == 6 - len(answered)
