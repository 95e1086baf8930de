"""Step-by-step progress on stderr, with how long each step took."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.quiet = quiet

    @contextmanager
    def step(self, message: str) -> Iterator[None]:
        self.done += 1
        if not self.quiet:
            print(f"[{self.done}/{self.total}] {message} ...", file=self.stream, flush=True)
        start = time.perf_counter()
        yield
        if not self.quiet:
            print(f"      done in {time.perf_counter() - start:.1f} s", file=self.stream, flush=True)

    def note(self, message: str) -> None:
        if not self.quiet:
            print(f"      {message}", file=self.stream, flush=True)
