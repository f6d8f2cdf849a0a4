"""`cartwise bench search`'s options (no service starts: each case is refused before any load)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from cartwise.app.cli import main


@pytest.mark.parametrize("args, says", [
    (["--sweep", "--steps", "100,50"], "ascending"),
    (["--sweep", "--steps", "50,fast"], "comma-separated"),
    (["--sweep", "--steps", "0,50"], "positive"),
    (["--steps", "50,100"], "--steps goes with --sweep"),
    (["--knee-qps", "200"], "--knee-qps with --overload"),
    (["--sweep", "--overload"], "two runs"),
    (["--sweep", "--qps", "100"], "drop --qps"),
    (["--overload", "--plot", "x.png"], "drop it with --overload"),
])
def test_inconsistent_options_are_refused_before_any_load(args, says):
    result = CliRunner().invoke(main, ["bench", "search", *args])
    assert result.exit_code == 2 and says in result.output, result.output
