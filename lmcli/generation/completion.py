"""A completion as it is generated: its token ids, its text (streamed) and why it ended."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lmcli.generation.text_stream import TextStream


@dataclass
class Completion:
    """Feed it generated ids with ``add``; it keeps the ids (without the end-of-text token) and the text."""

    text: TextStream
    token_ids: list[int] = field(default_factory=list)
    completion: str = ""
    stop_reason: str = "max_tokens"  # or "eos"

    def add(self, token_id: int, eos_id: int | None) -> str:
        """Record one generated id; return the text it completes ("" for the end-of-text token)."""
        if token_id == eos_id:
            self.stop_reason = "eos"
            return self.finish()
        self.token_ids.append(token_id)
        piece = self.text.push(token_id)
        self.completion += piece
        return piece

    def finish(self) -> str:
        """The text still held back (an incomplete character at the very end becomes U+FFFD)."""
        piece = self.text.flush()
        self.completion += piece
        return piece

    def as_dict(self) -> dict:
        return {"completion": self.completion, "token_ids": self.token_ids, "stop_reason": self.stop_reason}


def collect(
    steps: Iterable[list[int | None]], completions: list[Completion], eos_id: int | None,
    on_step: Callable[[], None] = lambda: None,
) -> int:
    """Run a batched generation to the end, one completion per sample; returns the steps taken."""
    taken = 0
    for step in steps:
        for completion, token_id in zip(completions, step):
            if token_id is not None:
                completion.add(token_id, eos_id)
        taken += 1
        on_step()
    for completion in completions:
        if completion.stop_reason != "eos":
            completion.finish()
    return taken
