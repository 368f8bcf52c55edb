"""``SSEReader``: one streaming chat completion read raw with httpx in a thread (its headers,
then every ``data:`` payload as it arrives), for tests that must see exactly how a stream
ends (an in-stream error, ``[DONE]``) while they do something else meanwhile."""

from __future__ import annotations

import threading

import httpx


class SSEReader(threading.Thread):
    """Reads one streaming response with httpx in a thread: its headers, then every
    ``data:`` payload as it comes."""

    def __init__(self, base_url: str, body: dict):
        super().__init__(daemon=True)
        self.base_url, self.body = base_url, body
        self.headers: httpx.Headers | None = None
        self.data: list[str] = []
        self.first = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.base_url, timeout=60) as client, \
                    client.stream("POST", "/chat/completions", json=self.body) as r:
                self.headers = r.headers
                assert r.status_code == 200, r.read()
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        self.data.append(line.removeprefix("data: "))
                        self.first.set()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.first.set()

    def result(self, timeout: float = 60.0) -> list[str]:
        self.join(timeout)
        assert not self.is_alive(), "the stream did not end"
        assert self.error is None, repr(self.error)
        return self.data
