"""The agent process loads what it keeps for its whole life at start and hides it from the garbage collector."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json
import cli.agent
from agent.core import fuzzy
before = len(gc.get_objects())
cli.agent.tune_gc()
print(json.dumps({
    "before": before,
    "frozen": gc.get_freeze_count(),
    "walked": len(gc.get_objects()),
    "threshold": gc.get_threshold(),
    "parser_loaded": fuzzy.zipf.cache_info().currsize > 0,
}))
"""


def test_tune_gc_freezes_the_modules_and_the_parser_tables_before_the_agent_starts() -> None:
    # In a process of its own: a frozen pytest process would keep its garbage for the rest of the run.
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120)
    seen = json.loads(done.stdout)
    assert seen["parser_loaded"]  # the word and pinyin tables are loaded before the freeze, not in a first turn
    assert seen["frozen"] > seen["before"]  # the imports and the tables loaded by tune_gc itself are frozen
    assert seen["walked"] < seen["frozen"] // 100  # a full collection walks next to nothing of the start
    assert seen["threshold"] == [50_000, 20, 100]
