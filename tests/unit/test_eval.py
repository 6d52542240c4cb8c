"""``wearbus eval``: the labelled corpus, how a reading is judged, and the done-when thresholds."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cli.eval import DEFAULT_CORPUS, Item, evaluate, judge, load

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / DEFAULT_CORPUS


def test_corpus_is_big_and_covers_both_languages_and_every_kind() -> None:
    items = load(CORPUS)
    assert len(items) >= 300
    for lang in ("en", "zh"):
        mine = [i for i in items if i.lang == lang]
        assert len(mine) >= 140
        for tag in ("asr", "mix", "num", "polite", "terse", "indirect", "oos"):
            assert any(tag in i.tags for i in mine), (lang, tag)
    assert len({i.text for i in items}) == len(items), "an utterance is listed twice"


def test_a_reading_is_judged_on_skill_and_key_slots() -> None:
    good = judge(Item("get me a taxi to the airport", "en", "hail_ride", {"destination": "airport"}, ()))
    assert good.correct
    assert not good.paid_wrong
    slot = judge(Item("get me a taxi to the airport", "en", "hail_ride", {"destination": "station"}, ()))
    assert not slot.correct
    assert slot.paid_wrong
    assert slot.wrong_slots == {"destination": "airport"}
    oos = judge(Item("tell me a joke", "en", None, {}, ("oos",)))
    assert oos.correct
    assert oos.got == "-"
    report = evaluate([Item("tell me a joke", "en", "music", {}, ())])
    assert report.confusions() == {("music", "-"): 1}


def _cli(*args: str) -> tuple[int, str]:
    import typer  # noqa: PLC0415

    from cli.eval import eval_command  # noqa: PLC0415

    app = typer.Typer()
    app.command()(eval_command)
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_eval_fails_on_a_paid_action_from_a_wrong_reading(tmp_path: Path) -> None:
    corpus = tmp_path / "c.yaml"
    corpus.write_text('en:\n  - {t: "get me a taxi to the airport", s: navigate}\n', encoding="utf-8")
    code, out = _cli("--corpus", str(corpus), "--min-lang", "0", "--min-asr", "0")
    assert code == 1
    assert "paid actions started from a wrong reading: 1" in out


def test_eval_says_what_is_wrong_with_a_bad_corpus(tmp_path: Path) -> None:
    corpus = tmp_path / "c.yaml"
    corpus.write_text("fr:\n  - {t: bonjour}\n", encoding="utf-8")
    code, out = _cli("--corpus", str(corpus))
    assert code == 2
    assert "'fr'" in out


def test_the_corpus_meets_the_done_when_thresholds() -> None:
    """The issue's done-when, on the corpus: >= 95% per language, >= 90% on ASR errors, no paid wrong reading."""
    report = evaluate(load(CORPUS))
    assert report.accuracy("en") >= 0.95
    assert report.accuracy("zh") >= 0.95
    assert report.accuracy(tag="asr") >= 0.90
    assert report.paid_wrong == 0
    code, out = _cli("--corpus", str(CORPUS))
    assert code == 0, out


def test_the_holdout_set_is_read_and_reported() -> None:
    """The second held-out set is never tuned on; its figures go to docs/understanding.md, not to a threshold."""
    items = load(ROOT / "tests/data/utterances_holdout.yaml")
    assert len(items) >= 80
    report = evaluate(items)
    assert 0.0 < report.accuracy() <= 1.0
