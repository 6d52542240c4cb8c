"""A pure rig to drive the core with messages as real devices would send them (no bus, a manual clock)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from agent.core.api import Command, Outcome
from agent.core.config import CoreConfig, Place, UserProfile, UsualOrder
from agent.core.engine import AgentCore
from schemas import codec
from schemas.actions import Ack, DeviceState
from schemas.envelope import Envelope, Message, envelope_of
from schemas.events import Body, GlassesWear, InEar, Location, RingWear, Utterance, event_key
from schemas.topics import DeviceId, Kind, ack_topic, event_topic, state_topic

B = TypeVar("B", bound=Body)
T0 = 1_764_000_000_000  # 2025-11-24 16:00 UTC (Monday 16:00 at UTC+0)
HOME = Place(name="home", lat=30.2745, lon=120.1390, address="Huanglong")
OFFICE = Place(name="office", lat=30.2790, lon=120.0265, address="Xixi campus")
STATION = Place(name="Hangzhou East Station", lat=30.2905, lon=120.2125)
SUBWAY = Place(name="subway", lat=30.2575, lon=120.1655, address="龙翔桥站")  # as the scenarios' built-in place
SCRIPT = " ".join(f"Sentence {i} of the keynote about wearables and the bus." for i in range(1, 21))
DEVICES: dict[Kind, str] = {
    Kind.GLASSES: "g1",
    Kind.RING: "r1",
    Kind.EARPHONES: "e1",
    Kind.PHONE: "p1",
}


def profile(lang: str = "en", **changes: Any) -> UserProfile:
    """A user with home, office, a usual order and one script per language."""
    base: dict[str, Any] = {
        "lang": lang,
        "home": HOME,
        "office": OFFICE,
        "places": (STATION, SUBWAY),
        "usual_order": UsualOrder(dish="beef noodles", restaurant="Lanzhou Noodle House"),
        "scripts": {"keynote": SCRIPT, "发布会": "各位好，" + "欢迎来到发布会。" * 30},
        "consent": frozenset({"proactive-health"}),  # the test user consented to health rules
    }
    base.update(changes)
    return UserProfile(**base)


def config(lang: str = "en", **changes: Any) -> CoreConfig:
    """A configuration whose default profile is :func:`profile`."""
    return CoreConfig(default_profile=profile(lang), **changes)


def of(items: Outcome | Iterable[Command], cls: type[B]) -> list[B]:
    """The bodies of type ``cls`` among commands."""
    commands = items.commands if isinstance(items, Outcome) else items
    return [c.body for c in commands if isinstance(c.body, cls)]


def to(items: Outcome | Iterable[Command], kind: Kind) -> list[Command]:
    """The commands sent to devices of ``kind``."""
    commands = items.commands if isinstance(items, Outcome) else items
    return [c for c in commands if c.device.kind is kind]


class Rig:
    """Feeds one user's devices' messages to a core and keeps the agent's clock.

    Every message goes through the real codec (encode, then decode and validate), with deterministic ids
    (``{device}-{n}``), so two rigs fed the same script produce the same messages.

    Args:
        core: the core under test (a default one if None).
        user: the user id.
        now: the start time (ms).
    """

    def __init__(self, core: AgentCore | None = None, *, user: str = "alice", now: int = T0) -> None:
        self.core = core if core is not None else AgentCore()
        self.user = user
        self.now = now
        self.n = 0
        self.sent: list[Command] = []

    def dev(self, kind: Kind) -> DeviceId:
        """The rig's device of ``kind``."""
        return DeviceId(self.user, kind, DEVICES[kind])

    def at(self, seconds: float) -> int:
        """Move the clock forward (without ticking) and return the new time."""
        self.now += int(seconds * 1000)
        return self.now

    def envelope(self, body: Body, *, src_ts: int | None = None, corr: str | None = None) -> Envelope[Any]:
        """An envelope with the next deterministic id."""
        self.n += 1
        env: Envelope[Any] = envelope_of(type(body))(
            id=f"m{self.n}", ts=self.now, seq=self.n, src_ts=src_ts, corr=corr, data=body
        )
        return env

    def message(self, topic: str, env: Envelope[Any]) -> Message:
        """Encode and decode, as the runtime would."""
        return codec.decode(topic, codec.encode(env), qos=1)

    def send(self, kind: Kind, body: Body, *, src_ts: int | None = None, corr: str | None = None) -> Outcome:
        """A device of ``kind`` publishes an event."""
        _, cls, name = event_key(kind, body)
        topic = event_topic(self.dev(kind), cls, name)
        return self.feed(self.message(topic, self.envelope(body, src_ts=src_ts, corr=corr)))

    def state(self, kind: Kind, online: bool = True, **fields: Any) -> Outcome:
        """A device's retained birth or Will."""
        body = DeviceState(online=online, kind=kind, **fields)
        return self.feed(self.message(state_topic(self.dev(kind)), self.envelope(body)))

    def ack(self, cmd: Command, status: str = "done") -> Outcome:
        """The target of ``cmd`` acknowledges it."""
        action = type(cmd.body).model_fields["type"].default
        body = Ack(action_id=cmd.id, action=action, status=status)
        return self.feed(self.message(ack_topic(cmd.device), self.envelope(body, corr=cmd.id)))

    def feed(self, message: Message) -> Outcome:
        """Hand one message to the core."""
        out = self.core.handle(message, self.now)
        self.sent += out.commands
        return out

    def tick(self, seconds: float = 0) -> Outcome:
        """Move the clock forward and let timers fire."""
        self.at(seconds)
        out = self.core.tick(self.now)
        self.sent += out.commands
        return out

    def online(self, *kinds: Kind) -> None:
        """Bring devices online (all four by default)."""
        for kind in kinds or tuple(Kind):
            self.state(kind, True)

    def ready(self, *, glasses: bool = True, ears: bool = True, at_home: bool = True) -> None:
        """All devices online, the ring on, glasses and earbuds worn as asked, the phone at home."""
        self.online()
        self.send(Kind.RING, RingWear(state="on_finger"))
        self.send(Kind.GLASSES, GlassesWear(state="donned" if glasses else "doffed"))
        for side in ("left", "right"):
            self.send(Kind.EARPHONES, InEar(side=side, state="in" if ears else "out"))
        if at_home:
            self.send(Kind.PHONE, Location(lat=HOME.lat, lon=HOME.lon))

    def say(self, text: str, lang: str = "en", kind: Kind = Kind.EARPHONES) -> Outcome:
        """The user says something (final ASR text)."""
        return self.send(kind, Utterance(text=text, lang=lang))
