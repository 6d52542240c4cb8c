"""Core output routing: the best device for the situation, and fallback on offline, rejected or no ack."""

from __future__ import annotations

from typing import Any

from agent.core.engine import AgentCore
from agent.core.testing import Rig, config, of, to
from schemas.actions import Haptic, Notify, ShowCard, Speak, TaskStart
from schemas.display import wrap
from schemas.events import (
    Activity,
    CalendarNext,
    EarBattery,
    GlassesBattery,
    GlassesWear,
    HeartRate,
    Money,
    PhoneBattery,
    PlaybackState,
    RingBattery,
    TaskStatus,
)
from schemas.topics import Kind

MIN = 60_000
SORRY = "Sorry, I didn't get that."


def rig(**kw: Any) -> Rig:
    r = Rig(AgentCore(config()))
    r.ready(**kw)
    return r


def test_worn_glasses_get_a_card() -> None:
    r = rig()
    out = r.say("blah blah")
    [cmd] = out.commands
    assert isinstance(cmd.body, ShowCard)
    assert cmd.body.title == SORRY
    assert cmd.device.kind is Kind.GLASSES
    assert cmd.deadline_ms == r.now + 5_000
    assert cmd.reason == "skill:unknown"


def test_without_glasses_the_earphones_speak() -> None:
    out = rig(glasses=False).say("blah blah")
    assert [type(c.body) for c in out.commands] == [Speak]
    assert to(out, Kind.EARPHONES)


def test_with_nothing_worn_the_phone_notifies() -> None:
    out = rig(glasses=False, ears=False).say("blah blah", kind=Kind.PHONE)
    assert of(to(out, Kind.PHONE), Notify) == [Notify(title=SORRY, body=SORRY)]


def test_in_a_meeting_a_card_and_a_haptic_rather_than_speech() -> None:
    r = rig()
    r.send(Kind.PHONE, CalendarNext(title="Team meeting", start_ts=r.now - 5 * MIN))
    out = r.say("blah blah")
    assert of(out, Speak) == []
    assert of(to(out, Kind.GLASSES), ShowCard)
    assert of(to(out, Kind.RING), Haptic) == [Haptic(pattern="tap")]
    assert r.core.snapshot("alice").quiet is True


def test_quiet_without_glasses_goes_to_the_phone_not_the_ear() -> None:
    r = rig(glasses=False)
    r.send(Kind.PHONE, CalendarNext(title="图书馆自习", start_ts=r.now - 5 * MIN))
    out = r.say("blah blah")
    assert of(out, Speak) == []
    assert of(to(out, Kind.PHONE), Notify)
    assert of(to(out, Kind.RING), Haptic)


def test_quiet_with_only_the_earphones_answers_into_them_not_into_silence() -> None:
    """Late at night, someone with only earphones asks a question through them: the answer goes back into the ear
    (nothing can show it); what nobody asked for stays silent."""
    r = rig(glasses=False)
    r.state(Kind.PHONE, online=False)
    r.now += 7 * 60 * MIN + 30 * MIN  # 23:30 local (UTC profile)
    out = r.say("blah blah", kind=Kind.EARPHONES)
    assert [c.device.kind for c in out.commands if isinstance(c.body, Speak)] == [Kind.EARPHONES]
    assert of(to(out, Kind.RING), Haptic)  # and the ring taps, as for anything in a quiet setting
    r.state(Kind.GLASSES)  # with glasses on the table (online, not worn) nothing changes
    again = r.say("blah blah", kind=Kind.GLASSES)  # asked through something else: no answer in the ear
    assert of(again, Speak) == []


def test_late_night_is_quiet() -> None:
    r = rig()
    r.now += 7 * 60 * MIN + 30 * MIN  # 23:30 local (UTC profile)
    out = r.say("blah blah")
    assert of(out, Speak) == []
    assert of(out, Haptic)


def test_on_the_move_a_short_card_and_speech() -> None:
    r = rig()
    r.send(Kind.EARPHONES, Activity(activity="walking"))
    [start] = of(r.say("Order my usual."), TaskStart)
    quote = TaskStatus(task_id=start.task_id, skill="order_food", status="quoted", price=Money(amount=32), eta_s=900)
    out = r.send(Kind.PHONE, quote)
    [card] = of(to(out, Kind.GLASSES), ShowCard)
    assert len(wrap(card.body)) == 1
    [speak] = of(to(out, Kind.EARPHONES), Speak)
    assert speak.text.endswith("Confirm?")
    assert r.core.snapshot("alice").moving is True


def test_asleep_holds_a_non_urgent_output_until_awake() -> None:
    r = rig()
    r.ack(r.say("Remind me to stretch in 10 minutes").commands[0])
    r.tick(9 * 60)
    r.send(Kind.RING, HeartRate(bpm=52, source="sleep"))
    assert r.core.snapshot("alice").asleep is True
    assert r.tick(60).commands == []
    out = r.send(Kind.GLASSES, GlassesWear(state="donned"))
    [card] = of(out, ShowCard)
    assert card.title.endswith(" · stretch")  # "⏰ 16:10 · stretch"


def test_a_fallback_while_asleep_is_held_too() -> None:
    r = rig()
    r.say("blah blah")
    r.at(1)
    r.send(Kind.RING, HeartRate(bpm=52, source="sleep"))
    assert r.tick(4).commands == []
    assert of(r.send(Kind.GLASSES, GlassesWear(state="donned")), ShowCard)[0].title == SORRY


# --- fallback -----------------------------------------------------------------------------------------------


def test_glasses_offline_the_next_device_gets_it() -> None:
    r = rig()
    r.state(Kind.GLASSES, online=False)
    out = r.say("blah blah")
    assert [(c.device.kind, type(c.body)) for c in out.commands] == [(Kind.EARPHONES, Speak)]


def test_rejected_card_falls_back_to_speech() -> None:
    r = rig()
    [card] = r.say("blah blah").commands
    out = r.ack(card, "rejected")
    [speak] = out.commands
    assert isinstance(speak.body, Speak)
    assert speak.body.text == SORRY
    assert speak.device.kind is Kind.EARPHONES
    assert (speak.corr, speak.reason) == (card.corr, "route:fallback")
    assert speak.id != card.id


def test_no_ack_before_the_deadline_falls_back_on_tick() -> None:
    r = rig()
    [card] = r.say("blah blah").commands
    assert r.tick(4).commands == []
    [speak] = r.tick(1).commands
    assert isinstance(speak.body, Speak)
    assert speak.corr == card.corr


def test_a_tick_of_some_users_leaves_the_others_timers_alone() -> None:
    core = AgentCore(config())
    alice, bob = Rig(core, user="alice"), Rig(core, user="bob")
    alice.ready()
    bob.ready()
    bob.now = alice.now = max(alice.now, bob.now)
    [card_a] = alice.say("blah blah").commands
    [card_b] = bob.say("blah blah").commands
    late = alice.now + 6_000  # both ack deadlines have passed
    assert core.tick(late, ["bob", "nobody"]).commands[0].corr == card_b.corr
    [speak] = core.tick(late, ["alice"]).commands
    assert (speak.corr, speak.device.user) == (card_a.corr, "alice")
    assert core.tick(late).commands == []


def test_a_user_waiting_for_an_ack_is_timed_until_it_comes_or_the_deadline_passes() -> None:
    """The runtime ticks only :meth:`AgentCore.timed_users` between its rounds of every user: a card waiting for
    its ack must be among them (its fallback is due in seconds), an idle user not."""
    core = AgentCore(config())
    alice, bob, carol = Rig(core, user="alice"), Rig(core, user="bob"), Rig(core, user="carol")
    for r in (alice, bob, carol):
        r.ready()
    assert core.timed_users() == []  # devices worn and online, nothing asked: every timer is minutes away
    [card_a] = alice.say("blah blah").commands
    bob.say("blah blah")
    assert core.timed_users() == ["alice", "bob"]
    alice.ack(card_a)
    assert core.timed_users() == ["bob"]
    assert bob.tick(6).commands  # past the deadline: the fallback went out and waits for its own ack
    assert core.timed_users() == ["bob"]
    for _ in range(5):  # nobody acks: each fallback's deadline passes in turn, down to the last device
        bob.tick(10)
    assert core.timed_users() == []


def test_an_acked_card_needs_no_fallback_and_shows_in_the_context() -> None:
    r = rig()
    [card] = r.say("blah blah").commands
    r.ack(card)
    assert r.tick(10).commands == []
    assert r.core.snapshot("alice").display == "card"


def test_device_going_offline_moves_what_it_has_not_acked() -> None:
    r = rig()
    assert len(r.say("blah blah").commands) == 1
    out = r.state(Kind.GLASSES, online=False)
    assert [(c.device.kind, type(c.body)) for c in out.commands] == [(Kind.EARPHONES, Speak)]
    assert r.tick(10).commands[-1].device.kind is Kind.PHONE  # the earphones did not ack either


def test_the_chain_ends_on_the_phone() -> None:
    r = rig()
    r.say("blah blah")
    kinds = []
    for _ in range(4):
        kinds += [(c.device.kind, type(c.body).__name__) for c in r.tick(5).commands]
    assert kinds == [(Kind.EARPHONES, "Speak"), (Kind.GLASSES, "Speak"), (Kind.PHONE, "Notify")]


def test_playback_state_shows_in_the_context() -> None:
    r = rig()
    r.send(Kind.EARPHONES, PlaybackState(state="music", text="calm piano"))
    assert r.core.snapshot("alice").speaking == "calm piano"
    r.send(Kind.EARPHONES, PlaybackState(state="idle"))
    assert r.core.snapshot("alice").speaking is None


def test_a_new_battery_level_republishes_the_context_and_the_same_one_does_not() -> None:
    r = rig()
    r.state(Kind.RING)
    levels = {
        Kind.GLASSES: (GlassesBattery(level_pct=64.5, charging=False), 64.5),
        Kind.RING: (RingBattery(level_pct=31.0, charging=True), 31.0),
        Kind.EARPHONES: (EarBattery(left_pct=40.0, right_pct=35.5, case_pct=90.0, charging=False), 35.5),
        Kind.PHONE: (PhoneBattery(level_pct=77.0, charging=False), 77.0),
    }
    names = {kind: r.dev(kind).device for kind in levels}
    for kind, (body, shown) in levels.items():
        assert r.send(kind, body).context_changed == {"alice"}, kind
        assert r.core.snapshot("alice").devices[names[kind]].battery_pct == shown
        assert not r.send(kind, body).context_changed, kind  # nothing new: no republish


def test_a_spoken_health_value_does_not_show_in_the_public_context() -> None:
    """The context goes to every app (``wb/v1/{user}/agent/context``); a sentence that quotes a health value (its
    ``health`` flag) is health data, so the context says only that something is being said."""
    r = rig()
    r.send(Kind.EARPHONES, PlaybackState(state="speaking", text="Your blood oxygen is 87%.", health=True))
    assert r.core.snapshot("alice").speaking == "speaking"
    r.send(Kind.EARPHONES, PlaybackState(state="speaking", text="Turn left in 200 m."))
    assert r.core.snapshot("alice").speaking == "Turn left in 200 m."


def test_an_acked_health_answer_does_not_show_in_the_public_context() -> None:
    r = rig(glasses=False)
    r.send(Kind.RING, HeartRate(bpm=72))
    out = r.say("what's my heart rate")
    [speak] = [c for c in out.commands if isinstance(c.body, Speak)]
    assert isinstance(speak.body, Speak)
    assert speak.body.health, "the answer quotes the heart rate"
    r.ack(speak)
    assert r.core.snapshot("alice").speaking == "speech"
    [plain] = [c for c in r.say("blah blah").commands if isinstance(c.body, Speak)]
    r.ack(plain)
    assert r.core.snapshot("alice").speaking == SORRY


def test_an_answer_goes_to_the_glasses_the_user_spoke_to() -> None:
    """A real pair of glasses beside an emulated one (``wearbus up --forever``): the emulator is seen more recently
    (its head pose) when the phone's quote comes, but the card goes where the user spoke, while that device is
    online."""
    from agent.core.engine import AgentCore  # noqa: PLC0415
    from agent.core.testing import Rig, config, of  # noqa: PLC0415
    from schemas.actions import ShowCard, TaskStart  # noqa: PLC0415
    from schemas.events import HeadPose, Money, TaskStatus, Utterance  # noqa: PLC0415
    from schemas.topics import DeviceId, Kind, event_topic  # noqa: PLC0415

    rig = Rig(AgentCore(config()))
    rig.ready()
    mine = DeviceId(rig.user, Kind.GLASSES, "my-glasses")
    said = rig.envelope(Utterance(text="Order my usual."))
    [start] = of(rig.feed(rig.message(event_topic(mine, "voice", "utterance"), said)), TaskStart)
    rig.at(1)
    rig.send(Kind.GLASSES, HeadPose(roll_deg=0.0, pitch_deg=0.0, heading_deg=10.0))  # the emulator, seen last
    quote = TaskStatus(task_id=start.task_id, skill="order_food", status="quoted", price=Money(amount=32), eta_s=1790)
    out = rig.send(Kind.PHONE, quote)
    cards = [c for c in out.commands if isinstance(c.body, ShowCard)]
    assert [c.device.device for c in cards] == ["my-glasses"], out.commands
