"""The earphones emulator: the speech queue with barge-in, playback events, replies, ANC, music, in-ear, motion."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.earphones import EarphonesEmulator, SpeechQueue
from devices.emulator import speaking_ms
from devices.scenario import parse
from devices.sdk import ActionRejected
from schemas.actions import Earcon, MediaControl, SetAnc, Speak
from schemas.clock import ManualClock
from schemas.envelope import make
from schemas.events import Activity, AncState, EarBattery, InEar, PlaybackState, Utterance

T0 = 1_764_018_000_000


def speak(text: str, *, barge_in: bool = False, priority: str = "normal") -> Speak:
    return Speak.model_validate({"text": text, "barge_in": barge_in, "priority": priority})


# --------------------------------------------------------------------------- the speech queue (pure)


def test_messages_play_one_after_the_other() -> None:
    q = SpeechQueue()
    first = q.say(speak("one two three"), T0)
    second = q.say(speak("four five"), T0 + 100)
    assert q.current is first
    assert (second.start_ms, second.end_ms) == (first.end_ms, first.end_ms + speaking_ms("four five"))
    assert q.snapshot() == ("speaking", "one two three", 1)
    assert q.advance(first.end_ms)
    assert q.current is second
    assert not q.advance(first.end_ms + 1)
    q.advance(second.end_ms)
    assert q.snapshot() == ("idle", None, 0)
    assert [s.text for s in q.spoken] == ["one two three", "four five"]


def test_barge_in_interrupts_and_drops_the_queue() -> None:
    q = SpeechQueue()
    q.say(speak("a long announcement about the weather"), T0)
    q.say(speak("then this"), T0)
    urgent = q.say(speak("your car is here", barge_in=True), T0 + 500)
    assert q.current is urgent
    assert urgent.start_ms == T0 + 500
    assert list(q.queue) == []
    assert [s.text for s in q.interrupted] == ["a long announcement about the weather", "then this"]


def test_high_priority_jumps_the_queue_without_interrupting() -> None:
    q = SpeechQueue()
    playing = q.say(speak("playing now"), T0)
    q.say(speak("normal"), T0)
    high = q.say(speak("high", priority="high"), T0)
    assert q.current is playing
    assert [s.text for s in q.queue] == ["high", "normal"]
    assert high.start_ms == playing.end_ms
    assert q.describe(high) == "queued behind 1 message(s)"


def test_a_full_queue_drops_the_oldest_low_priority_message() -> None:
    q = SpeechQueue(max_queue=2)
    q.say(speak("now"), T0)
    q.say(speak("low one", priority="low"), T0)
    q.say(speak("normal"), T0)
    extra = q.say(speak("another"), T0)
    assert [s.text for s in q.queue] == ["normal", "another"]
    assert q.dropped == 1
    assert q.describe(extra) == "queued behind 2 message(s)"


def test_music_plays_under_speech_and_comes_back() -> None:
    q = SpeechQueue()
    q.music = "轻松"
    assert q.snapshot() == ("music", "轻松", 0)
    said = q.say(speak("a reminder"), T0)
    assert q.snapshot() == ("speaking", "a reminder", 0)
    q.advance(said.end_ms)
    assert q.snapshot() == ("music", "轻松", 0)
    assert q.stop(said.end_ms)
    assert q.snapshot() == ("idle", None, 0)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("say"), st.integers(0, 5_000), st.booleans(), st.sampled_from(["low", "normal", "high"])),
        st.tuples(st.just("wait"), st.integers(0, 20_000), st.just(False), st.just("normal")),
    ),
    max_size=40,
)


@given(ops)
def test_the_queue_keeps_its_invariants(steps: list[tuple[str, int, bool, str]]) -> None:
    q = SpeechQueue(max_queue=5)
    now = T0
    for op, dt, barge, prio in steps:
        now += dt
        if op == "say":
            said = q.say(speak("word " * (dt % 7 + 1), barge_in=barge, priority=prio), now)
            if barge:
                assert q.current is said
        else:
            q.advance(now)
        assert len(q.queue) <= 5
        if q.current is None:
            assert not q.queue
        else:
            assert q.current.end_ms > now or op == "say"
            t = q.current.end_ms
            for waiting in q.queue:  # queued messages are timed back to back
                assert waiting.start_ms == t
                t = waiting.end_ms
        assert q.state == ("speaking" if q.current is not None else "idle")


# --------------------------------------------------------------------------- the emulator


def earphones(steps: str = "", **spec: object) -> tuple[EarphonesEmulator, ManualClock]:
    clock = ManualClock(T0)
    devices = ", ".join(f"{k}: {v}" for k, v in spec.items())
    s = parse(f"name: e\nduration: '02:00:00'\ndevices: {{earphones: {{{devices}}}}}\nsteps:\n{steps}")
    dev = EarphonesEmulator("alice", "earphones-1", clock=clock, scenario=s, seed=5, start_ms=T0)
    dev.begin()
    return dev, clock


async def test_speech_is_reported_as_playback_and_ends_on_time() -> None:
    dev, _clock = earphones()
    action = speak("打车去公司，约43元，7分钟上车。确认吗？")
    assert await dev.speak(action, make(action)) == "speaking"
    assert dev.emitted(PlaybackState)[-1] == PlaybackState(state="speaking", text=action.text, queue=0)
    await dev.run_until(T0 + speaking_ms(action.text) + 2_000)
    assert dev.emitted(PlaybackState)[-1] == PlaybackState(state="idle", queue=0)


async def test_the_user_answers_a_question_after_hearing_it() -> None:
    dev, clock = earphones(
        "  - {at: +00:00:00, device: earphones,"
        " respond: {on: speak, do: say, text: 确认, lang: zh, delay: '00:00:02'}}\n"
    )
    await dev.run_until(T0 + 1_000)
    await dev.speak(speak("It is 7 o'clock."), make(speak("x")))  # not a question: no answer
    question = speak("打车去公司，约43元，7分钟上车。确认吗？", barge_in=True)
    await dev.speak(question, make(question))
    asked = clock.now_ms()
    heard = asked + speaking_ms(question.text)
    await dev.run_until(heard + 1_000)
    assert dev.emitted(Utterance) == []
    await dev.run_until(heard + 4_000)
    answer = dev.emitted(Utterance)
    assert [(u.text, u.lang) for u in answer] == [("确认", "zh")]


async def test_buds_in_the_case_refuse_speech_and_stop_playing() -> None:
    dev, clock = earphones()
    action = speak("hello")
    await dev.speak(action, make(action))
    dev.set_in_ear(False, clock.now_ms())
    assert [e.state for e in dev.emitted(InEar)][-2:] == ["out", "out"]
    assert dev.emitted(PlaybackState)[-1].state == "idle"
    for handler, body in ((dev.speak, action), (dev.earcon, Earcon(name="confirm"))):
        with pytest.raises(ActionRejected, match="case"):
            await handler(body, make(body))


async def test_anc_and_music_are_acknowledged_and_reported() -> None:
    dev, _ = earphones()
    anc = SetAnc(mode="anc")
    assert await dev.set_anc(anc, make(anc)) == "anc anc"
    assert dev.emitted(AncState)[-1] == AncState(mode="anc")
    play = MediaControl(command="play", query="轻松")
    assert await dev.media(play, make(play)) == "play: 轻松"
    assert dev.emitted(PlaybackState)[-1] == PlaybackState(state="music", text="轻松", queue=0)
    pause = MediaControl(command="pause")
    await dev.media(pause, make(pause))
    assert dev.emitted(PlaybackState)[-1].state == "idle"


async def test_motion_follows_the_person_only_while_worn() -> None:
    dev, _ = earphones(
        "  - {at: +00:10:00, go: {to: office, mode: bike}}\n  - {at: +00:20:00, device: earphones, wear: off}\n",
        in_ear=True,
    )
    await dev.run_until(T0 + 30 * 60_000)
    assert [a.activity for a in dev.emitted(Activity)] == ["stationary", "cycling"]
    await dev.run_until(T0 + 100 * 60_000)  # the trip ends while the buds are in the case
    assert [a.activity for a in dev.emitted(Activity)] == ["stationary", "cycling"]


async def test_buds_charge_in_the_case_and_drain_in_the_ear() -> None:
    dev, _ = earphones(in_ear=False, left_pct=50, right_pct=50, case_pct=80)
    await dev.run_until(T0 + 20 * 60_000)
    charging = dev.emitted(EarBattery)[-1]
    assert charging.left_pct > 50
    assert charging.charging
    dev.set_in_ear(True, T0 + 20 * 60_000)
    await dev.run_until(T0 + 60 * 60_000)
    assert dev.emitted(EarBattery)[-1].left_pct < charging.left_pct
    assert dev.state(online=True).battery_pct is not None
