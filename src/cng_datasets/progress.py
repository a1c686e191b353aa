"""Progress of a local run (:func:`cng_datasets.local.run_local`): the :class:`Event`s it reports
and :class:`Progress`, the running totals a display is drawn from. No I/O here: drawing them on a
terminal is the ``run`` command's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """Something that happened during a run.

    ``kind`` is one of:

    - ``plan``: the plan is known (``data``: ``steps``, ``chunks``, ``chunk_size``, ``features``,
      ``workers``); sent once before convert (``features`` None) and again after it;
    - ``step-started`` / ``step-finished`` (``data["seconds"]``) / ``step-skipped`` (``message``:
      why) / ``step-failed`` (``message``: the error);
    - ``chunk-started`` / ``chunk-finished`` (``data``: ``seconds``, ``features``, ``cells`` when
      the chunk's marker tells) / ``chunk-skipped`` (done in an earlier run) / ``chunk-failed``;
    - ``output``: a step's output line on stdout (``message``);
    - ``warning``: a step's ``warning: …`` line on stderr (``message``, without the prefix), once
      per step and text;
    - ``lease-waiting``: another run holds the dataset and ``wait`` was asked (``message``: who);
    - ``cleaned``: temporaries of an interrupted run were removed (``data["paths"]``).
    """

    kind: str
    step: str | None = None
    chunk: int | None = None
    message: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.monotonic)


EventCallback = Callable[[Event], None]


@dataclass
class Progress:
    """Running totals built from :class:`Event`s, for a progress display (no I/O).

    Example:
        >>> p = Progress()
        >>> p.update(Event("plan", data={"steps": ["convert"], "chunks": 4, "features": 100}))
        >>> p.update(Event("chunk-finished", "hex", 0, data={"features": 25, "cells": 70}))
        >>> p.chunks_done, p.cells
        (1, 70)
    """

    started: float = field(default_factory=time.monotonic)
    steps: list[str] = field(default_factory=list)
    state: dict[str, str] = field(default_factory=dict)  # step -> pending/running/done/skipped/failed
    chunks_total: int = 0
    chunks_done: int = 0
    chunks_skipped: int = 0
    chunks_running: int = 0
    features: int | None = None
    features_hexed: int = 0
    cells: int = 0
    hex_started: float | None = None
    _finished_this_run: int = 0

    def update(self, ev: Event) -> None:
        """Fold one event into the totals."""
        k = ev.kind
        if k == "plan":
            self.steps = list(ev.data.get("steps", self.steps))
            self.chunks_total = int(ev.data.get("chunks") or 0)
            self.features = ev.data.get("features", self.features)
            for s in self.steps:
                self.state.setdefault(s, "pending")
        elif k == "step-started" and ev.step:
            self.state[ev.step] = "running"
            if ev.step == "hex":
                self.hex_started = ev.time
        elif k == "step-finished" and ev.step:
            self.state[ev.step] = "done"
        elif k == "step-skipped" and ev.step:
            self.state[ev.step] = "skipped"
            if ev.step == "hex":
                self.chunks_done = self.chunks_total
        elif k == "step-failed" and ev.step:
            self.state[ev.step] = "failed"
        elif k == "chunk-started":
            self.chunks_running += 1
        elif k == "chunk-finished":
            self.chunks_running = max(0, self.chunks_running - 1)
            self.chunks_done += 1
            self._finished_this_run += 1
            self.features_hexed += int(ev.data.get("features") or 0)
            self.cells += int(ev.data.get("cells") or 0)
        elif k == "chunk-skipped":
            self.chunks_done += 1
            self.chunks_skipped += 1
            self.features_hexed += int(ev.data.get("features") or 0)
            self.cells += int(ev.data.get("cells") or 0)
        elif k == "chunk-failed":
            self.chunks_running = max(0, self.chunks_running - 1)

    def elapsed(self, now: float | None = None) -> float:
        return (now if now is not None else time.monotonic()) - self.started

    def eta(self, now: float | None = None) -> float | None:
        """Seconds until hex is done, from this run's chunk rate (None before the first chunk)."""
        if self.hex_started is None or self._finished_this_run == 0 or self.state.get("hex") != "running":
            return None
        now = now if now is not None else time.monotonic()
        rate = self._finished_this_run / max(1e-9, now - self.hex_started)
        return max(0.0, (self.chunks_total - self.chunks_done) / rate)
