"""Training: a session that starts, resumes or fine-tunes a run, and the truncated-BPTT loop it runs.

    session.py    how a run starts (`Fresh`, `FromParent`) or resumes: checks, corpus, recipe, the loop under the lock
    loop.py       the `Trainer`: steps, evaluates, saves, reading as the algorithm over the parts below
    cursor.py     the window each step reads, the hidden state between windows, the epoch's turn
    update.py     one update: forward, backward, clip, AdamW and the weight average, or a skipped step
    schedule.py   where a run stands (`Progress`), its learning rate, when it stops; the time budget's `Keeper`
    ema.py        the weight average evaluated and kept as best
    snapshot.py   latest.pt's training state (optimizer, progress, RNG, hidden state), taken and restored
    reporter.py   each evaluation record to its observers (metrics, TensorBoard, the printed line); the bar
    board.py      TensorBoard event files
    interrupt.py  SIGINT/SIGTERM as a flag the loop polls; a failed write turned into the command that resumes

The session sits above the recipe and the loop. May import `recipe`, `run`, `model`, `text` and the shared modules.
"""
