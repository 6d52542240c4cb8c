"""What a person waits on: decided by the body's class, the same answer as its ``type`` gives."""

from __future__ import annotations

from agent.runtime.interactive import INTERACTIVE, MODELS, interactive
from schemas.envelope import Message, envelope_of
from schemas.events import EVENTS
from schemas.topics import DeviceId, event_topic, parse


def test_every_interactive_type_has_its_model() -> None:
    assert {m.model_fields["type"].default for m in MODELS} == INTERACTIVE


def test_interactive_agrees_with_the_type_for_every_event_of_the_contract() -> None:
    for (kind, cls, name), model in EVENTS.items():
        topic = event_topic(DeviceId("alice", kind, "d1"), cls, name)
        body = model.model_construct()  # the class decides, not the values
        message = Message(topic, parse(topic), envelope_of(model).model_construct(id="x", ts=1, data=body))
        assert interactive(message) == (model.model_fields["type"].default in INTERACTIVE), model.__name__
