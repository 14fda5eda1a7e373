"""A client for any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, a hosted API).

What an offline pipeline needs from it: a timeout per call, retries with backoff on timeouts,
server errors and answers the caller cannot parse, a cap on concurrent requests, and a disk
cache keyed by the request so a rerun costs nothing. When every attempt fails the error names
the endpoint and the last cause.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, TypeVar

import httpx

from onereason.rundir import write_text

T = TypeVar("T")


class EndpointError(RuntimeError):
    """An endpoint gave no usable answer after every retry."""


class ChatClient:
    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 3, concurrency: int = 8, cache_dir: Path | None = None,
                 temperature: float = 0.0, max_tokens: int = 512, backoff: float = 0.5):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.retries, self.concurrency = model, retries, concurrency
        self.temperature, self.max_tokens, self.backoff = temperature, max_tokens, backoff
        self.cache_dir = cache_dir
        headers = {"Authorization": f"Bearer {api_key or os.environ.get('OPENAI_API_KEY', 'none')}"}
        self.http = httpx.Client(timeout=timeout, headers=headers)

    def _key(self, messages: list[dict]) -> str:
        body = json.dumps([self.url, self.model, self.temperature, self.max_tokens, messages], sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()

    def complete(self, messages: list[dict], parse: Callable[[str], T]) -> T:
        """The parsed answer to one conversation; `parse` raises ValueError on an answer it cannot use
        (that attempt is retried). Cached answers are parsed again, never trusted blindly."""
        path = self.cache_dir / f"{self._key(messages)}.json" if self.cache_dir else None
        if path is not None and path.exists():
            try:
                return parse(json.loads(path.read_text())["content"])
            except (ValueError, KeyError):
                path.unlink(missing_ok=True)
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                r = self.http.post(self.url, json={"model": self.model, "messages": messages,
                                                   "temperature": self.temperature, "max_tokens": self.max_tokens})
                if r.status_code >= 400:
                    raise ValueError(f"HTTP {r.status_code}: {r.text[:200]}")
                content = r.json()["choices"][0]["message"]["content"]
                value = parse(content)
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as e:
                last = e
                continue
            if path is not None:
                write_text(path, json.dumps({"messages": messages, "content": content}))
            return value
        raise EndpointError(f"endpoint {self.url} (model {self.model!r}) gave no usable answer after "
                            f"{self.retries + 1} attempts; last error: {type(last).__name__}: {last}")

    def complete_many(self, conversations: list[list[dict]],
                      parse: Callable[[str], T] | list[Callable[[str], T]]) -> list[T]:
        """`complete` for each conversation (one parser, or one per conversation), at most
        `concurrency` requests in flight, answers in order."""
        parsers = parse if isinstance(parse, list) else [parse] * len(conversations)
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self.complete, conversations, parsers))
