"""Sampling: drawing characters and the one generation engine every caller shares.

    draw.py    sample_rows / sample_next: one draw per row, per-row settings, NaN-free; race noise
    races.py   Races: each request's noise drawn ahead from its own generator, taken a step at a time
    steer.py   Steering, RowSteer: known words, no-repeat, penalties, logit bias (a row's scores before its draw)
    request.py SampleConfig, Group: one request's settings and its state in the engine
    engine.py  Engine (requests stepped as one batch), Generation, generate
    logprobs.py Logprob, score_rows: each drawn character's log-probability and the top alternatives
    beam.py    BeamConfig, beam_search: the most likely continuations, length-normalised; a stochastic variant
    items.py   ItemsConfig, Items, draw_items: N distinct complete items of a list, new ones on request
    require.py draw_containing: samples that hold every required word, drawn again within a bound

`charnn sample`, the REPL, the server and the Python API all generate through `Engine`, so a seed
gives the same text whichever way it is asked for, alone or in a busy batch.
"""

from charnn.sample.draw import RACE_BLOCK, Settings, race_block, race_noise, sample_next, sample_rows
from charnn.sample.engine import FUSED_MAX_BATCH, STEPPED_PRIME_MAX, Engine, Generation, generate
from charnn.sample.items import Items, ItemsConfig, draw_items
from charnn.sample.races import Races
from charnn.sample.request import Group, SampleConfig, encode_prime

__all__ = ["FUSED_MAX_BATCH", "RACE_BLOCK", "STEPPED_PRIME_MAX", "Engine", "Generation", "Group", "Items", "ItemsConfig",
           "Races", "SampleConfig", "Settings", "draw_items", "encode_prime", "generate", "race_block", "race_noise",
           "sample_next", "sample_rows"]
