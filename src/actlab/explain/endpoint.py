"""A client of OpenAI-compatible chat endpoints (llama.cpp server, vLLM, Ollama, OpenAI) on the standard library.

``POST {base_url}/chat/completions`` with a concurrency limit, a request timeout, retries with exponential backoff
on HTTP 429 (its ``Retry-After`` honoured), 408, 5xx, timeouts, refused connections and malformed JSON; other
4xx fail at once. Every answer is cached on disk, one file per sha256 of (messages, model, params) written
atomically (temp file + fsync + rename, ``actlab.artifact``), so a rerun costs nothing and a run killed at any
moment leaves only whole entries; an unreadable or mismatched entry is a miss. Each HTTP attempt is appended to a
JSONL audit log (status, raw body, error). The API key comes from a flag or the environment and is never written.
"""
from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import logging
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actlab.artifact import atomic_write_json

log = logging.getLogger(__name__)
DEFAULT_BASE_URL = "http://127.0.0.1:8080/v1"


class EndpointError(RuntimeError):
    """The endpoint refused a request, or kept failing after every retry."""


@dataclass
class EndpointConfig:
    """Where and how to call an OpenAI-compatible chat endpoint."""

    base_url: str = ""
    """e.g. http://127.0.0.1:8080/v1 (default: $OPENAI_BASE_URL, else http://127.0.0.1:8080/v1)."""
    endpoint_model: str = ""
    """Model name sent in each request (default: $OPENAI_MODEL, else 'default')."""
    api_key: str = ""
    """API key (default: the environment variable named by api_key_env; never logged or cached)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key."""
    concurrency: int = 4
    """Requests in flight at most."""
    max_retries: int = 5
    """Retries after the first attempt (429, 408, 5xx, timeouts, refused connections, malformed JSON)."""
    timeout: float = 60.0
    """Seconds to wait for one response."""
    backoff: float = 1.0
    """First wait before a retry, in seconds; doubled at each retry (plus up to a tenth, random)."""
    max_backoff: float = 60.0
    """Longest wait between retries (also caps a Retry-After)."""
    cache_dir: str = ""
    """Folder of cached answers (empty: no cache)."""
    audit_log: str = ""
    """JSONL file every HTTP attempt is appended to (empty: none)."""

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_retries < 0 or self.timeout <= 0 or self.backoff < 0:
            raise ValueError(f"need concurrency >= 1, max_retries >= 0, timeout > 0, backoff >= 0; got "
                             f"{self.concurrency}, {self.max_retries}, {self.timeout}, {self.backoff}")

    def resolved(self) -> tuple[str, str, str]:
        """``(base_url, model, api_key)`` with the environment's defaults filled in."""
        url = (self.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://; got {url!r}")
        model = self.endpoint_model or os.environ.get("OPENAI_MODEL") or "default"
        key = self.api_key or os.environ.get(self.api_key_env, "")
        return url, model, key


def cache_key(messages: list[dict], model: str, params: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of (messages, model, params)."""
    blob = json.dumps({"messages": messages, "model": model, "params": params}, sort_keys=True,
                      ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """One JSON file per key (``<dir>/<key[:2]>/<key>.json``), each written atomically."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        """The cached answer, or None (missing, unreadable, or written for another key: a miss, logged)."""
        p = self.path(key)
        try:
            entry = json.loads(p.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable cache entry %s (%s)", p, e)
            return None
        if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("content"), str):
            log.warning("ignoring cache entry %s: it does not hold an answer for its key", p)
            return None
        return entry["content"]

    def put(self, key: str, request: dict, content: str) -> None:
        atomic_write_json(self.path(key), {"key": key, "request": request, "content": content})

    def keys(self) -> list[str]:
        """Keys of the entries on disk (temp files of interrupted writes are not entries)."""
        return sorted(p.stem for p in self.folder.glob("??/*.json"))


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class EndpointClient:
    """``chat(messages, max_tokens=..., temperature=...) -> str`` against an OpenAI-compatible endpoint."""

    def __init__(self, cfg: EndpointConfig | None = None):
        self.cfg = cfg or EndpointConfig()
        self.base_url, self.model, self._key = self.cfg.resolved()
        self.cache = ResponseCache(self.cfg.cache_dir) if self.cfg.cache_dir else None
        self._slots = threading.BoundedSemaphore(self.cfg.concurrency)
        self._audit_lock = threading.Lock()
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0}
        self._stats_lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"endpoint:{self.model}@{self.base_url}"

    def _count(self, what: str) -> None:
        with self._stats_lock:
            self.stats[what] += 1

    def _audit(self, record: dict) -> None:
        if not self.cfg.audit_log:
            return
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._audit_lock:
            Path(self.cfg.audit_log).parent.mkdir(parents=True, exist_ok=True)
            with open(self.cfg.audit_log, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()

    def chat(self, messages: list[dict], *, max_tokens: int = 64, temperature: float = 0.0, **params: Any) -> str:
        """The assistant's answer (cached answers are returned without a request)."""
        params = {"max_tokens": int(max_tokens), "temperature": float(temperature), **params}
        key = cache_key(messages, self.model, params)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self._count("cache_hits")
                return hit
        body = {"model": self.model, "messages": messages, **params}
        content = self._post(body, key)
        if self.cache is not None:
            self.cache.put(key, {"messages": messages, "model": self.model, "params": params}, content)
        return content

    def chat_many(self, conversations: list[list[dict]], **params: Any) -> list[str]:
        """Answers of many conversations, ``concurrency`` at a time, in order."""
        with ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            return list(pool.map(lambda m: self.chat(m, **params), conversations))

    def _wait(self, attempt: int, hint: float | None = None) -> float:
        w = self.cfg.backoff * (2 ** attempt) * (1 + 0.1 * random.random())
        if hint is not None:
            w = max(w, hint)
        return min(w, self.cfg.max_backoff)

    def _post(self, body: dict, key: str) -> str:
        url = f"{self.base_url}/chat/completions"
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                self._count("retries")
            hint, status, raw, t0 = None, None, "", time.time()
            try:
                self._count("requests")
                with self._slots:
                    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
                    with urllib.request.urlopen(req, timeout=self.cfg.timeout) as resp:
                        status = resp.status
                        raw = resp.read().decode("utf-8", errors="replace")
                content = _content(raw)
                self._audit({"time": t0, "key": key, "url": url, "attempt": attempt, "status": status,
                             "elapsed_s": round(time.time() - t0, 4), "response": raw})
                return content
            except urllib.error.HTTPError as e:
                status = e.code
                raw = _body(e)
                last = f"HTTP {e.code} {e.reason}: {raw[:300]}"
                if e.code == 429:
                    hint = retry_after(e.headers.get("Retry-After") if e.headers else None)
                elif e.code != 408 and e.code < 500:
                    self._audit({"time": t0, "key": key, "url": url, "attempt": attempt, "status": status,
                                 "response": raw, "error": last})
                    raise EndpointError(f"{url} refused the request ({last}); not retried") from None
            except TimeoutError as e:
                last = f"no response within {self.cfg.timeout:g} s ({e})"
            except urllib.error.URLError as e:
                last = f"cannot reach {url}: {e.reason}"
                if isinstance(e.reason, (socket.timeout, TimeoutError)):
                    last = f"no response within {self.cfg.timeout:g} s"
            except (ValueError, KeyError, IndexError, TypeError) as e:
                last = f"malformed response ({type(e).__name__}: {e}): {raw[:300]!r}"
            except (ConnectionError, OSError) as e:   # reset / closed mid-response
                last = f"connection failed: {type(e).__name__}: {e}"
            self._audit({"time": t0, "key": key, "url": url, "attempt": attempt, "status": status,
                         "elapsed_s": round(time.time() - t0, 4), "response": raw, "error": last})
            if attempt < self.cfg.max_retries:
                w = self._wait(attempt, hint)
                log.warning("%s: %s; retry %d/%d in %.2f s", url, last, attempt + 1, self.cfg.max_retries, w)
                time.sleep(w)
        raise EndpointError(f"{url} failed after {self.cfg.max_retries + 1} attempts; last error: {last}")


def _body(e: urllib.error.HTTPError) -> str:
    try:
        return e.read().decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException):   # the error body itself may be cut off
        return ""


def _content(raw: str) -> str:
    """``choices[0].message.content`` of a chat completion (ValueError/KeyError/TypeError when malformed)."""
    obj = json.loads(raw)
    content = obj["choices"][0]["message"]["content"]
    if not isinstance(content, str):
        raise TypeError(f"message.content is {type(content).__name__}, not a string")
    return content


def read_audit(path: str | os.PathLike) -> list[dict]:
    """The audit log's records (a line cut off by a killed run is skipped)."""
    out = []
    for line in Path(path).read_text("utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
