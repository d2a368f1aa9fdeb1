"""A thin wrapper on the official ``openai`` client: any OpenAI-compatible chat-completions server.

Configuration: ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` (or ``--base-url``); the key is read
from the environment only, never from argv, and never appears in a message.

Retries are the ``openai`` client's own (``max_retries``): it retries connection errors,
timeouts, 408, 409, 429 and 5xx with exponential backoff (0.5 s doubling up to 8 s, minus up to
25 % jitter), honouring a server's ``Retry-After`` / ``retry-after-ms`` of up to 120 s (openai 3.57).
``timeout`` is the client's per-attempt timeout in seconds. What is left after the retries:

* 401/403 (:class:`EndpointAuthError`), 404 and an unreachable server (:class:`EndpointError`)
  stop the whole command: every other request would fail the same way;
* 429, 5xx, timeouts and other 4xx are :class:`RequestFailed`: that request is reported and
  asked again next time, the others go on.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from neurflow_graph.errors import InputError, NeurflowError
from neurflow_graph.labels.cache import Reply
from neurflow_graph.labels.requests import ChatRequest

DEFAULT_MODEL = "gpt-4o"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_TIMEOUT = 120.0
DEFAULT_MAX_RETRIES = 4


class EndpointError(InputError):
    """The endpoint cannot be used at all (unreachable, wrong URL or model, no key); exit 2."""


class EndpointAuthError(EndpointError):
    """The endpoint refused the API key (401/403)."""


class RequestFailed(NeurflowError):
    """One request failed after the client's retries (429, 5xx, timeout, other 4xx)."""


@dataclass(frozen=True)
class EndpointConfig:
    """Where and how to ask; ``api_key`` is never printed (``repr`` hides it)."""

    base_url: str
    api_key: str | None
    model: str = DEFAULT_MODEL
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES

    def __repr__(self) -> str:
        return (f"EndpointConfig(base_url={self.base_url!r}, model={self.model!r}, timeout={self.timeout}, "
                f"max_retries={self.max_retries}, api_key={'set' if self.api_key else 'unset'})")

    @classmethod
    def from_env(cls, *, base_url: str | None = None, model: str | None = None, timeout: float | None = None,
                 max_retries: int | None = None, environ: dict[str, str] | None = None) -> "EndpointConfig":
        env = os.environ if environ is None else environ
        url = base_url or env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        return cls(base_url=url.rstrip("/"), api_key=env.get("OPENAI_API_KEY") or None,
                   model=model or DEFAULT_MODEL, timeout=DEFAULT_TIMEOUT if timeout is None else float(timeout),
                   max_retries=DEFAULT_MAX_RETRIES if max_retries is None else int(max_retries))

    def require_key(self) -> None:
        if not self.api_key:
            raise EndpointError(f"OPENAI_API_KEY is not set: export the API key of {self.base_url} "
                                "(a local server that needs none accepts any value, e.g. OPENAI_API_KEY=local), "
                                "or use --dry-run to see the requests without sending them")


def _redact(text: str, secret: str | None) -> str:
    text = re.sub(r"^Error code: \d+ - ", "", " ".join(str(text).split()))  # the status is said already
    if secret:
        text = text.replace(secret, "***")
    return text[:200] + ("..." if len(text) > 200 else "")


class ChatClient:
    """Sends :class:`ChatRequest` bodies with ``openai.OpenAI(...).chat.completions.create``."""

    def __init__(self, config: EndpointConfig) -> None:
        import openai

        config.require_key()
        self.config = config
        self._openai = openai
        self._client = openai.OpenAI(api_key=config.api_key, base_url=config.base_url, timeout=config.timeout,
                                     max_retries=config.max_retries)

    def close(self) -> None:
        self._client.close()

    def complete(self, request: ChatRequest) -> Reply:
        """Ask ``request``; :class:`RequestFailed` / :class:`EndpointError` on failure (messages name the
        base URL and the status, never the key)."""
        openai = self._openai
        url, key = self.config.base_url, self.config.api_key
        try:
            response = self._client.chat.completions.create(**request.body())
        except openai.AuthenticationError as e:
            raise EndpointAuthError(f"{url} refused the API key (HTTP {e.status_code}): check OPENAI_API_KEY "
                                    f"for that server") from None
        except openai.PermissionDeniedError as e:
            raise EndpointAuthError(f"{url} denied access (HTTP {e.status_code}) to model {request.model!r}: "
                                    "check the key's permissions") from None
        except openai.NotFoundError as e:
            raise EndpointError(f"{url} answered HTTP 404 for model {request.model!r}: check --model-name and "
                                f"that --base-url ends where /chat/completions is served (e.g. .../v1); "
                                f"server said: {_redact(e.message, key)}") from None
        except openai.APITimeoutError:
            raise RequestFailed(f"{url}: timed out after {self.config.timeout:g} s "
                                f"({self.config.max_retries} retries)") from None
        except openai.APIConnectionError as e:
            cause = e.__cause__ or e
            raise EndpointError(f"cannot reach {url} ({_redact(type(cause).__name__ + ': ' + str(cause), key)}): "
                                "is the server running and --base-url / OPENAI_BASE_URL right?") from None
        except openai.APIStatusError as e:
            raise RequestFailed(f"{url} answered HTTP {e.status_code} after {self.config.max_retries} retries: "
                                f"{_redact(e.message, key)}") from None
        except openai.OpenAIError as e:
            raise RequestFailed(f"{url}: {_redact(str(e), key)}") from None
        return _reply(response)


def _reply(response: Any) -> Reply:
    text = ""
    choices = getattr(response, "choices", None) or []
    if choices:
        message = getattr(choices[0], "message", None)
        text = (getattr(message, "content", None) or "") if message is not None else ""
    usage: dict[str, int] = {}
    u = getattr(response, "usage", None)
    if u is not None:
        for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
            v = getattr(u, k, None)
            if isinstance(v, int):
                usage[k] = v
    return Reply(text=text, usage=usage, response_model=getattr(response, "model", None))
