"""The ``wearbus`` command line (a tool above the product: it may import all of it, nothing imports it)."""

import os

# The agent reads the pinyin of single characters only (agent/core/fuzzy.py), which pypinyin takes from its table of
# characters; its table of phrases costs every process ~0.4 s of CPU to load and changes no single character's
# readings (checked over U+4E00-U+9FFF; tests/unit/test_fuzzy.py keeps checking the lexicon's). A user's own choice
# wins.
os.environ.setdefault("PYPINYIN_NO_PHRASES", "true")
