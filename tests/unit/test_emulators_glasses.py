"""The glasses emulator: the HUD (cards, paging, captions), reactions to a card, wear, cells, camera."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.glasses import GlassesEmulator, HudState
from devices.scenario import parse
from devices.scenario_spec import Scenario
from devices.sdk import ActionRejected
from schemas.actions import (
    Capture,
    CardButton,
    ClearDisplay,
    ShowCaption,
    ShowCard,
    ShowNav,
    ShowTeleprompter,
    ShowText,
    Speak,
)
from schemas.clock import ManualClock
from schemas.display import LINES_PER_SCREEN, paginate, text_units
from schemas.envelope import make
from schemas.events import (
    BatterySwap,
    DisplayState,
    GlassesBattery,
    GlassesTouch,
    GlassesWear,
    HeadGesture,
    HeadPose,
    PhotoCaptured,
    UiEvent,
    Utterance,
)

T0 = 1_764_018_000_000
SCRIPT = " ".join(f"Sentence number {i} of the keynote, spoken slowly." for i in range(40))


def glasses(steps: str = "", **devices: object) -> tuple[GlassesEmulator, ManualClock]:
    clock = ManualClock(T0)
    spec = ", ".join(f"{k}: {v}" for k, v in devices.items())
    s: Scenario = parse(f"name: g\nduration: '01:00:00'\ndevices: {{glasses: {{{spec}}}}}\nsteps:\n{steps}")
    dev = GlassesEmulator("alice", "glasses-1", clock=clock, scenario=s, seed=3, start_ms=T0)
    dev.begin()
    return dev, clock


def card(*actions: str, ttl_s: int = 30) -> ShowCard:
    return ShowCard(
        title="Order 牛肉面",
        body="湖滨面馆 · 牛肉面 ×1\n¥32 · 约28分钟\n送到家",
        buttons=[CardButton(label=a.split(":")[0].title(), action_id=a) for a in actions],
        ttl_s=ttl_s,
    )


# --------------------------------------------------------------------------- the HUD (pure)


def test_a_card_shows_title_body_and_buttons_on_one_screen() -> None:
    hud = HudState()
    hud.show(card("confirm:alice-8", "deny:alice-8"), T0)
    assert hud.kind == "card"
    assert hud.lines[0] == "Order 牛肉面"
    assert hud.lines[-1] == "[Confirm]  [Deny]"
    assert len(hud.lines) <= LINES_PER_SCREEN
    assert hud.subjects() == ["confirm:alice-8", "deny:alice-8"]
    assert hud.display_state() == DisplayState(app="card", page=1, max_page=1, on=True)


def test_a_card_times_out_and_the_display_goes_back_to_the_dashboard() -> None:
    hud = HudState()
    hud.show(card("confirm:x", ttl_s=10), T0)
    assert not hud.expire(T0 + 9_999)
    assert hud.expire(T0 + 10_000)
    assert hud.display_state() == DisplayState(app="none", page=0, max_page=0, on=False)
    assert not hud.expire(T0 + 20_000)


def test_teleprompter_pages_show_which_page_of_how_many() -> None:
    pages = paginate(SCRIPT)
    assert len(pages) > 3
    hud = HudState()
    for n, text in enumerate(pages, 1):
        hud.show(ShowTeleprompter(script_id="keynote", text=text, page=n, max_page=len(pages)), T0)
        assert (hud.page, hud.max_page) == (n, len(pages))
        assert hud.display_state().app == "teleprompter"
        assert "\n".join(hud.lines) == text
    hud.show(ClearDisplay(), T0)
    assert (hud.kind, hud.lines, hud.page) == ("none", (), 0)


def test_captions_scroll_finals_and_replace_a_partial_in_place() -> None:
    hud = HudState()
    hud.show(ShowCaption(text="正在聆听…", src_lang="en", tgt_lang="zh", is_final=False), T0)
    assert hud.lines == ("正在聆听…",)
    hud.show(ShowCaption(text="你好", src_lang="en", tgt_lang="zh", is_final=True), T0)
    assert hud.lines == ("你好",)  # the partial was replaced
    for i in range(8):
        hud.show(ShowCaption(text=f"第{i}句", src_lang="en", tgt_lang="zh", is_final=True), T0)
    assert hud.lines == tuple(f"第{i}句" for i in range(3, 8))  # the last five lines stay on screen
    hud.show(ShowCaption(text="部分", is_final=False), T0)
    assert "部分" in hud.body.splitlines()[-1]
    assert hud.display_state().app == "translate"


def test_nav_shows_the_manoeuvre_distance_and_eta() -> None:
    hud = HudState()
    hud.show(ShowNav(maneuver="turn_left", distance_m=120, street="Baochu Rd", eta_s=600, destination="West Lake"), T0)
    assert hud.title == "West Lake"
    assert hud.lines == ("turn left in 120 m", "Baochu Rd · 10 min")


text_st = st.text(alphabet=st.sampled_from("abc 你好世界，ok。"), min_size=1, max_size=90)


@given(title=st.text(alphabet="abcdefgh ", min_size=1, max_size=30), body=text_st, n=st.integers(0, 2))
def test_any_valid_card_fits_the_screen(title: str, body: str, n: int) -> None:
    try:
        action = ShowCard(
            title=title, body=body, buttons=[CardButton(label=f"B{i}", action_id=f"a:{i}") for i in range(n)]
        )
    except ValueError:
        return  # the schema already refuses what does not fit
    hud = HudState()
    hud.show(action, T0)
    assert len(hud.lines) <= LINES_PER_SCREEN
    assert all(text_units(line) <= 120 for line in hud.lines)


@given(pages=st.integers(1, 30), page=st.integers(1, 30))
def test_paging_never_shows_a_page_past_the_last(pages: int, page: int) -> None:
    hud = HudState()
    hud.show(ShowText(text="x", page=min(page, pages), max_page=pages), T0)
    state = hud.display_state()
    assert 1 <= state.page <= state.max_page


# --------------------------------------------------------------------------- the emulator


async def test_showing_a_card_publishes_the_display_state_and_the_ack_says_what() -> None:
    dev, _ = glasses()
    action = card("confirm:alice-8")
    detail = await dev.show_card(action, make(action))
    assert detail == "showing card"
    assert dev.hud.title == "Order 牛肉面"
    assert dev.emitted(DisplayState)[-1] == DisplayState(app="card", page=1, max_page=1, on=True)


async def test_the_user_clicks_the_confirm_button_a_few_seconds_after_the_card_shows() -> None:
    dev, clock = glasses("  - {at: +00:00:00, device: glasses, respond: {on: card, do: click, delay: '00:00:03'}}\n")
    await dev.run_until(T0 + 1_000)
    action = card("confirm:alice-8", "deny:alice-8")
    await dev.show_card(action, make(action))
    shown_at = clock.now_ms()
    await dev.run_until(shown_at + 2_000)
    assert dev.emitted(UiEvent) == []
    await dev.run_until(shown_at + 4_000)
    assert dev.emitted(UiEvent) == [
        UiEvent(event="click", container_id="card", action_id="confirm:alice-8", item_index=0)
    ]
    await dev.show_card(action, make(action))  # armed once: a second card is not clicked
    await dev.run_until(clock.now_ms() + 10_000)
    assert len(dev.emitted(UiEvent)) == 1


async def test_a_reaction_ignores_cards_that_do_not_match_and_can_nod_instead() -> None:
    dev, clock = glasses(
        "  - {at: +00:00:00, device: glasses, respond: {on: card, match: '^confirm:', do: nod, delay: '00:00:02'}}\n"
    )
    await dev.run_until(T0 + 1_000)
    dismiss = card("dismiss:glasses_battery")
    await dev.show_card(dismiss, make(dismiss))
    await dev.run_until(clock.now_ms() + 5_000)
    assert dev.emitted(HeadGesture) == []
    confirm = card("confirm:alice-9")
    await dev.show_card(confirm, make(confirm))
    await dev.run_until(clock.now_ms() + 5_000)
    assert [g.gesture for g in dev.emitted(HeadGesture)] == ["nod"]


async def test_swiping_through_the_teleprompter_pages() -> None:
    dev, clock = glasses(
        "  - {at: +00:00:00, device: glasses,"
        " respond: {on: teleprompter, do: swipe_forward, times: 2, delay: '00:00:30'}}\n"
    )
    await dev.run_until(T0 + 1_000)
    for page in (1, 2, 3):
        action = ShowTeleprompter(script_id="keynote", text=f"page {page}", page=page, max_page=5)
        await dev.show_teleprompter(action, make(action))
        await dev.run_until(clock.now_ms() + 31_000)
    swipes = [t.gesture for t in dev.emitted(GlassesTouch)]
    assert swipes == ["swipe_forward", "swipe_forward"]


async def test_glasses_taken_off_refuse_to_show_and_clear_the_display() -> None:
    dev, _ = glasses()
    action = card("confirm:x")
    await dev.show_card(action, make(action))
    dev.set_worn(False, T0)
    assert dev.hud.kind == "none"
    assert dev.emitted(GlassesWear)[-1] == GlassesWear(state="doffed")
    with pytest.raises(ActionRejected, match="not worn"):
        await dev.show_card(action, make(action))
    speak = Speak(text="hello")
    with pytest.raises(ActionRejected, match="not worn"):
        await dev.speak(speak, make(speak))
    assert await dev.clear(ClearDisplay(), make(ClearDisplay())) == "showing none"


async def test_a_cell_swap_is_two_events_and_a_full_cell() -> None:
    dev, _ = glasses(left_pct=12, right_pct=80)
    dev.swap(dev.cells.cells(T0)[0].slot, T0)
    removed, inserted = dev.emitted(BatterySwap)
    assert (removed.slot, removed.action, inserted.action) == ("left", "removed", "inserted")
    assert inserted.remaining_pct_other == pytest.approx(80, abs=0.1)
    battery = dev.emitted(GlassesBattery)[-1]
    assert [(c.slot, c.level_pct) for c in battery.cells] == [("left", 100.0), ("right", pytest.approx(80, abs=0.1))]


async def test_the_battery_reports_both_cells_every_minute_and_the_lit_display_drains_faster() -> None:
    dev, clock = glasses(left_pct=50, right_pct=90)
    await dev.run_until(T0 + 10 * 60_000)
    idle_drain = 50 - dev.cells.cells(clock.now_ms())[0].level_pct
    reports = dev.emitted(GlassesBattery)
    assert 10 <= len(reports) <= 12
    assert all(len(r.cells) == 2 for r in reports)
    action = ShowText(text="lit")
    await dev.show_text(action, make(action))
    start = dev.cells.cells(clock.now_ms())[0].level_pct
    await dev.run_until(clock.now_ms() + 10 * 60_000)
    lit_drain = start - dev.cells.cells(clock.now_ms())[0].level_pct
    assert lit_drain > idle_drain * 1.5


async def test_head_pose_is_published_at_two_hertz_while_worn_only() -> None:
    dev, clock = glasses()
    await dev.run_until(T0 + 10_000)
    poses = dev.emitted(HeadPose)
    assert 18 <= len(poses) <= 22
    dev.set_worn(False, clock.now_ms())
    await dev.run_until(clock.now_ms() + 10_000)
    assert len(dev.emitted(HeadPose)) == len(poses)


async def test_capture_publishes_the_photo_reference_when_it_is_saved() -> None:
    dev, clock = glasses()
    action = Capture(kind="photo")
    assert await dev.capture(action, make(action)) == "capturing photo"
    assert dev.emitted(PhotoCaptured) == []
    await dev.run_until(clock.now_ms() + 1_000)
    photo = dev.emitted(PhotoCaptured)[0]
    assert (photo.width, photo.height, photo.format) == (4032, 3024, "jpeg")
    assert photo.uri.startswith("file:///sdcard/DCIM/")


async def test_a_long_press_wake_then_the_words() -> None:
    dev, clock = glasses("  - {at: +00:00:10, device: glasses, say: 拍张照, wake: long_press}\n")
    await dev.run_until(T0 + 20_000)
    kinds = [type(b).__name__ for b in dev.recent if not isinstance(b, HeadPose | GlassesBattery)]
    assert kinds[kinds.index("GlassesTouch") :] == ["GlassesTouch", "Wake", "Vad", "Vad", "Utterance", "GlassesTouch"]
    said = dev.emitted(Utterance)[0]
    assert (said.text, said.lang, said.final) == ("拍张照", "zh", True)
    assert [t.gesture for t in dev.emitted(GlassesTouch)] == ["long_press_start", "long_press_end"]
    assert clock.now_ms() >= T0 + 20_000


def test_the_birth_carries_the_battery() -> None:
    dev, _ = glasses(left_pct=40, right_pct=60)
    state = dev.state(online=True)
    assert state.battery_pct == pytest.approx(50, abs=0.5)
    assert "display.card" in state.capabilities
