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


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shown_commands(text: str) -> list[list[str]]:
    """Each `charnn …` command of a bash block, as words (continuation lines joined, comments dropped)."""
    import shlex

    commands = []
    for block in re.findall(r"```bash\n(.+?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|\|", line):
                if part.split() and part.split()[0].endswith("charnn"):  # (other lines may hold open quotes)
                    words = shlex.split(part, comments=True)
                    if len(words) > 1:
                        commands.append(words[1:])
    return commands


def test_every_command_the_readme_and_docs_show_exists_with_its_options() -> None:
    import typer.main

    from charnn.cli import app

    group = typer.main.get_command(app)
    assert hasattr(group, "commands")
    checked = 0
    for page in DOCS:
        for words in shown_commands(page.read_text(encoding="utf-8")):
            name = words[0]
            if name.startswith("-"):
                continue  # `charnn --debug …`
            assert name in group.commands, f"{page.name}: no command 'charnn {name}'"
            known = {opt for p in group.commands[name].params for opt in p.opts + p.secondary_opts}
            for word in words[1:]:
                option = word.split("=", 1)[0]
                if option.startswith("--"):
                    assert option in known, f"{page.name}: 'charnn {name}' has no option {option}"
            checked += 1
    assert checked >= 40


def test_links_between_the_pages_lead_somewhere() -> None:
    for page in DOCS:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name} links to a missing {target}"


def test_the_readme_is_short() -> None:
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) < 250
