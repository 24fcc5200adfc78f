"""The README is the front door: its test command is what CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    block = re.search(r"Install and run the tests.*?```bash\n(.+?)\n```", readme, re.S)
    assert block, "README lost its test set-up command"
    install, test = [part.strip() for part in block.group(1).split("&&")[1:]]
    assert install in ci and test in ci.splitlines()[-1]
