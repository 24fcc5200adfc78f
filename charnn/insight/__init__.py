"""Looking at what a model learned: plots and neuron pages (originality's index is the run's: `run/originality.py`).

    plot.py       loss curves of one or more runs, as a PNG or in the terminal
    inspector.py  `charnn inspect`: what neurons track, surprise, gradient reach, as one HTML page

May import `api`, `sample` and everything below them; not `serve`, `export`, `write` or `cli`.
"""
