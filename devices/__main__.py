"""``python -m devices ring|glasses|earphones|phone ...``: the same commands as ``wearbus device ...``."""

from __future__ import annotations

import typer

from devices.cli import add_commands

app = typer.Typer(
    name="devices",
    help="Run a wearbus device emulator (the same as `wearbus device ...`).",
    no_args_is_help=True,
    add_completion=False,
)
add_commands(app)

if __name__ == "__main__":
    app(prog_name="python -m devices")
