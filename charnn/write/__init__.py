"""Writing with a model, interactively: `charnn repl` and its `--choose` variant.

    repl.py       the interactive loop: type text, the model continues it; `:commands`
    chooser.py    `--choose`: the draft and its states, the next words to pick from, typed text, `:auto`

May import `api`, `sample` and everything below them; not `serve`, `export`, `insight` or `cli`.
"""
