"""Utterances held for the optional LLM resolver, off the pump: other users' turns and alerts go on while it thinks.

A held utterance is not stored and not acknowledged until its answer (or its absence) comes and a later pump turn
handles it; after a crash the broker delivers it again.
"""

from __future__ import annotations

from collections.abc import Container

from agent.core.intents import Intent, Unknown
from agent.core.intents import parse as parse_text
from agent.llm import ChatResolver
from schemas.envelope import Message
from schemas.events import Utterance
from schemas.tasks import TaskScope


class LlmHold:
    """The utterances waiting for the resolver (by envelope id), and those whose answer came."""

    __slots__ = ("_held", "_late", "_resolver", "_tasks")

    def __init__(self, resolver: ChatResolver | None, tasks: TaskScope) -> None:
        self._resolver = resolver
        self._tasks = tasks
        self._held: dict[str, Message] = {}
        self._late: list[tuple[Message, Intent | None]] = []

    def __contains__(self, key: object) -> bool:
        """Whether the message of envelope id ``key`` waits for the resolver (not to acknowledge yet)."""
        return key in self._held

    @property
    def answered(self) -> bool:
        """Whether answers came that a pump turn should handle."""
        return bool(self._late)

    def hold(self, fresh: list[Message], hinted: Container[str]) -> list[Message]:
        """Take out the final utterances the built-in parser does not understand (and the core has no hint for) and
        ask the resolver about them; the rest, to handle now."""
        resolver = self._resolver
        if resolver is None:
            return fresh
        out: list[Message] = []
        for message in fresh:
            body = message.data
            key = message.envelope.id
            if (
                not isinstance(body, Utterance)
                or not body.final
                or key in hinted
                or not isinstance(parse_text(body.text, body.lang), Unknown)
            ):
                out.append(message)
                continue
            if key in self._held:
                continue  # delivered again while its first copy waits for the resolver
            self._held[key] = message
            self._tasks.start(self._ask(resolver, message), name=f"llm[{key}]")
        return out

    async def _ask(self, resolver: ChatResolver, message: Message) -> None:
        body = message.data
        assert isinstance(body, Utterance)  # noqa: S101 (only utterances are held)
        intent = await resolver.resolve(body.text, body.lang)  # None on any failure; never raises but cancel
        self._late.append((message, intent))

    def take_answered(self) -> list[tuple[Message, Intent | None]]:
        """The utterances whose answer came (still held until :meth:`release`)."""
        late, self._late = self._late, []
        return late

    def release(self, messages: list[Message]) -> None:
        """These are handled (or failed to be): no longer held."""
        for message in messages:
            self._held.pop(message.envelope.id, None)
