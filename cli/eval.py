"""``wearbus eval``: run the one-sentence parser over a labelled corpus and report how well it understands.

The corpus (``tests/data/utterances.yaml``) has two lists, ``en`` and ``zh``; each item has the text ``t``, the
expected skill ``s`` (null: out of scope, the agent must not act), key slots ``k`` and tags ``g`` (``asr`` marks
recognition errors and typos). An item is correct when the reading acts on the expected skill with every key slot
as labelled, or, for an out-of-scope item, when the agent does not act (it says it did not understand or asks
back). A paid action (food, ride) started from a wrong reading (wrong skill or a wrong key slot) is counted apart:
it must be 0.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from agent.core.intents import Intent, parse
from agent.core.tasks import PAID

DEFAULT_CORPUS = Path("tests/data/utterances.yaml")
NONE = "-"  # the "skill" of a reading that does not act


@dataclass(frozen=True, slots=True)
class Item:
    """One labelled utterance."""

    text: str
    lang: str
    skill: str | None
    slots: dict[str, Any]
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Result:
    """How one utterance was read."""

    item: Item
    got: str  # the skill acted on, or NONE
    asked_back: bool
    wrong_slots: dict[str, Any]  # key slot -> what was read instead (None: not read)
    correct: bool
    paid_wrong: bool


@dataclass(slots=True)
class Report:
    """The figures of one run."""

    results: list[Result] = field(default_factory=list)

    def accuracy(self, lang: str | None = None, tag: str | None = None, skill: str | None = None) -> float:
        """The share of correct readings among the items selected (1.0 when none is)."""
        chosen = [
            r
            for r in self.results
            if (lang is None or r.item.lang == lang)
            and (tag is None or tag in r.item.tags)
            and (skill is None or (r.item.skill or NONE) == skill)
        ]
        return sum(r.correct for r in chosen) / len(chosen) if chosen else 1.0

    def count(self, lang: str | None = None, tag: str | None = None) -> int:
        """How many items there are of that language and tag."""
        return sum(
            1 for r in self.results if (lang is None or r.item.lang == lang) and (tag is None or tag in r.item.tags)
        )

    @property
    def paid_wrong(self) -> int:
        """Paid actions started from a wrong reading."""
        return sum(r.paid_wrong for r in self.results)

    def confusions(self) -> Counter[tuple[str, str]]:
        """(expected skill, skill acted on) for every reading with the wrong skill."""
        return Counter((r.item.skill or NONE, r.got) for r in self.results if r.got != (r.item.skill or NONE))


def load(path: Path) -> list[Item]:
    """Read a corpus file.

    Raises:
        ValueError: the file does not have the corpus's shape (the message says where).
    """
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of language -> list of items")  # noqa: TRY004
    items: list[Item] = []
    for lang, rows in data.items():
        if lang not in ("en", "zh") or not isinstance(rows, list):
            raise ValueError(f"{path}: {lang!r} is not 'en' or 'zh' with a list of items")
        for n, row in enumerate(rows):
            if not isinstance(row, dict) or not isinstance(row.get("t"), str):
                raise ValueError(f"{path}: {lang}[{n}] needs a text 't'")  # noqa: TRY004
            items.append(
                Item(
                    text=row["t"],
                    lang=lang,
                    skill=row.get("s"),
                    slots=dict(row.get("k") or {}),
                    tags=tuple(row.get("g") or ()),
                )
            )
    return items


def _same(expected: Any, got: Any) -> bool:
    if got is None:
        return False
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        return isinstance(got, int | float) and float(got) == float(expected)
    return str(got).strip().lower() == str(expected).strip().lower()


def judge(item: Item) -> Result:
    """Read one item with the deterministic parser and judge the reading."""
    parsed = parse(item.text, item.lang)
    acts = isinstance(parsed, Intent) and parsed.sure
    asked_back = isinstance(parsed, Intent) and not parsed.sure
    got = str(parsed.skill) if acts and isinstance(parsed, Intent) else NONE
    slots: dict[str, Any] = dict(parsed.slots) if isinstance(parsed, Intent) else {}
    wrong = {k: slots.get(k) for k, v in item.slots.items() if not _same(v, slots.get(k))}
    expected = item.skill or NONE
    correct = got == expected and (expected == NONE or not wrong)
    paid_wrong = got in PAID and not correct
    return Result(item, got, asked_back, wrong, correct, paid_wrong)


def evaluate(items: list[Item]) -> Report:
    """Judge every item."""
    return Report([judge(item) for item in items])


def print_report(report: Report, console: Console, *, failures: bool = False) -> None:
    """The figures as tables: per language, per skill and language, the ASR subset, the confusion pairs."""
    langs = ("en", "zh")
    head = Table(title="Understanding: correct skill and key slots")
    head.add_column("set")
    for lang in langs:
        head.add_column(lang, justify="right")
    head.add_row("all", *(f"{report.accuracy(lang):.1%} of {report.count(lang)}" for lang in langs))
    for tag in ("asr", "mix", "num", "polite", "terse", "indirect", "oos"):
        head.add_row(tag, *(f"{report.accuracy(lang, tag):.1%} of {report.count(lang, tag)}" for lang in langs))
    console.print(head)
    skills = sorted({r.item.skill or NONE for r in report.results})
    per = Table(title="Per skill")
    per.add_column("skill")
    for lang in langs:
        per.add_column(lang, justify="right")
    for skill in skills:
        cells = []
        for lang in langs:
            n = sum(1 for r in report.results if r.item.lang == lang and (r.item.skill or NONE) == skill)
            cells.append(f"{report.accuracy(lang, skill=skill):.0%} of {n}" if n else "")
        per.add_row(skill, *cells)
    console.print(per)
    pairs = report.confusions()
    if pairs:
        conf = Table(title="Confusion pairs (expected -> acted on; '-' = did not act)")
        conf.add_column("expected")
        conf.add_column("got")
        conf.add_column("n", justify="right")
        for (want, got), n in pairs.most_common():
            conf.add_row(want, got, str(n))
        console.print(conf)
    asr = sum(r.asked_back for r in report.results)
    console.print(f"asked back (fuzzy reading below the threshold): {asr}")
    console.print(f"paid actions started from a wrong reading: {report.paid_wrong}")
    if failures:
        for r in report.results:
            if not r.correct:
                console.print(
                    f"[red]x[/] [{r.item.lang}] {r.item.text!r}: want {r.item.skill or NONE} {r.item.slots}, "
                    f"got {r.got}{' (asked back)' if r.asked_back else ''} wrong slots {r.wrong_slots}",
                    markup=True,
                    highlight=False,
                )


def eval_command(
    corpus: Annotated[Path, typer.Option(help="The labelled corpus (YAML: en:/zh: lists).")] = DEFAULT_CORPUS,
    min_lang: Annotated[float, typer.Option(help="Fail below this share correct in either language.")] = 0.95,
    min_asr: Annotated[float, typer.Option(help="Fail below this share correct on the 'asr' items.")] = 0.90,
    failures: Annotated[bool, typer.Option("--failures", help="List every utterance read wrongly.")] = False,
) -> None:
    """Measure the sentence parser on a labelled corpus: accuracy per skill and language, confusions, paid errors.

    Exits 1 when a language is below --min-lang, the 'asr' items below --min-asr, or any paid action (food, ride)
    would start from a wrong reading.
    """
    console = Console()
    try:
        items = load(corpus)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        hint = " (run it from the repository's root, or give --corpus)" if isinstance(exc, FileNotFoundError) else ""
        Console(stderr=True).print(f"[bold red]error:[/] cannot read the corpus: {exc}{hint}")
        raise typer.Exit(2) from None
    report = evaluate(items)
    print_report(report, console, failures=failures)
    below = [lang for lang in ("en", "zh") if report.count(lang) and report.accuracy(lang) < min_lang]
    asr = report.accuracy(tag="asr")
    if below or asr < min_asr or report.paid_wrong:
        console.print(
            f"[bold red]FAIL[/]: below {min_lang:.0%}: {', '.join(below) or 'none'}; "
            f"asr {asr:.1%} (min {min_asr:.0%}); paid from a wrong reading: {report.paid_wrong}"
        )
        raise typer.Exit(1)
    console.print("[bold green]OK[/]")
