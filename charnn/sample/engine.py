"""The generation engine: `Engine`, which steps every request's group of samples (request.py) as one batch.

The prime goes through the network in one forward pass (a short one through the fused step); after
that every step feeds one character per sample and carries the hidden state. On CPU the steps run
through `model.Stepper` (hand-fused, no oneDNN per-call overhead) up to FUSED_MAX_BATCH rows; on GPU
they use the fused cuDNN module. N samples run as one batch of N; requests share one batch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from charnn.errors import GenerationError, UsageError
from charnn.model.network import CharRNN, State, Stepper, pack_state, unpack_state
from charnn.sample.draw import Settings, sample_rows
from charnn.sample.logprobs import Logprob, score_rows
from charnn.sample.races import Races
from charnn.sample.request import Group, SampleConfig, encode_prime, voice_of
from charnn.sample.steer import row_steers
from charnn.text.tokenizer import CharTokenizer

FUSED_MAX_BATCH = 64  # rows up to which the CPU step runs through Stepper (RESULTS.md: as fast or faster to 64)
STEPPED_PRIME_MAX = 8  # primes up to this long run through the Stepper on CPU (see Engine._prime)


class Engine:
    """The one generation engine: any number of groups stepped together as one batch.

    Groups join (their prime runs in one forward pass) and leave between steps; each
    keeps its own settings and generator, so a group samples the same text whether it is
    alone or shares the batch. Each step draws one character for every row at once
    (`sample_rows` with per-row settings; each group's generator draws its own rows' races),
    then advances the whole batch by one character: through `Stepper` (hand-fused) for up to
    FUSED_MAX_BATCH rows on CPU, else through the fused cuDNN/oneDNN module.

    A failure confined to one group (NaN in its rows, its generator, its bookkeeping) ends
    that group alone (`Group.error`, `finished`); the caller removes it with `leave`, and the
    others step on unchanged. A failure of the batched forward pass raises from `step`.
    Call it under `torch.inference_mode()`; not thread-safe (one thread steps it).
    """

    def __init__(self, model: CharRNN, tokenizer: CharTokenizer):
        model.eval()
        self.model = model
        self.tokenizer = tokenizer
        self.device = model.head.weight.device
        self.stepper = Stepper(model) if self.device.type == "cpu" else None
        self.groups: list[Group] = []
        self._rows: list[int] = []  # rows of each group, in batch order
        self.parts: list[list[Tensor]] = []  # the batch's state, unpacked between steps: part (h, c, …) -> layer -> (B, H)
        self.logits = torch.empty(0)  # (B, V): each row's distribution of its next character
        self._settings: Settings | None = None
        self._races = Races(tokenizer.vocab_size, self.device)

    def join(self, prime: str, cfg: SampleConfig, state: State | None = None) -> Group:
        """Validate, prime and add a group; `state` continues a previous context (batch 1 or n)."""
        prime_ids = self._checked(prime, cfg)
        state = state if state is not None else self.model.init_state(1, self.device, voice_of(self.model, cfg.voice))
        # Prime once (batch 1 unless a batched state is continued), then fan out to n samples.
        primed = torch.tensor([prime_ids], device=self.device).expand(state[0].size(1), -1)  # (B0, P)
        last, state = self._prime(primed, state)  # (B0, V)
        group = self._group(cfg, prime)
        n = cfg.num_samples
        self._add([group], last.expand(n, -1), tuple(s.expand(-1, n, -1) for s in state))
        return group

    def join_many(self, requests: Sequence[tuple[str, SampleConfig]]) -> list[Group | Exception]:
        """Add a group per (prime, settings), from fresh states: each a `Group`, or the exception that
        refused that request alone (bad settings, unknown characters, its prime's pass failing).

        Primes of one length go through the network together, one pass at batch k instead of k passes
        at batch 1: a burst of requests (clients that finished together sending their next) stalls the
        batch once, not once per request (benchmarks/serve_load.py). The groups join in request order.
        """
        results: list[Group | Exception] = []
        groups: dict[int, Group] = {}  # request -> its group, while it is still joining
        by_length: dict[int, list[tuple[int, list[int]]]] = {}
        for i, (prime, cfg) in enumerate(requests):
            try:
                prime_ids = self._checked(prime, cfg)
                groups[i] = self._group(cfg, prime)
            except Exception as e:
                results.append(e)
                continue
            results.append(groups[i])
            by_length.setdefault(len(prime_ids), []).append((i, prime_ids))
        primed: dict[int, tuple[Tensor, State]] = {}  # request -> its logits (1, V) and state (L, 1, H)
        for members in by_length.values():
            try:
                ids = torch.tensor([prime_ids for _, prime_ids in members], device=self.device)  # (k, P)
                last, state = self._prime(ids, self.model.init_state(len(members), self.device,
                                                                     self._voices([groups[i].cfg for i, _ in members])))
            except Exception as e:
                for i, _ in members:
                    results[i] = e
                continue
            for j, (i, _) in enumerate(members):
                primed[i] = last[j : j + 1], tuple(s[:, j : j + 1] for s in state)
        if primed:  # one concatenation for all: each request's row fanned out to its n samples
            rows = [(primed[i], groups[i].cfg.num_samples) for i in sorted(primed)]
            self._add([groups[i] for i in sorted(primed)], torch.cat([last.expand(n, -1) for (last, _), n in rows]),
                      tuple(torch.cat([state[p].expand(-1, n, -1) for (_, state), n in rows], dim=1)
                            for p in range(len(rows[0][0][1]))))
        return results

    def _voices(self, cfgs: Sequence[SampleConfig]) -> Tensor | None:
        """The voice of each request's row (k, E) in a voiced model, None in another."""
        if self.model.voice_table is None:
            return None
        vectors = [voice_of(self.model, cfg.voice) for cfg in cfgs]
        return torch.stack([self.model.voice_vector() if v is None else v for v in vectors])

    def _checked(self, prime: str, cfg: SampleConfig) -> list[int]:
        """The prime's ids, once the settings (the voice too) are valid (a missing seed is drawn and stored back)."""
        cfg.check()
        if problems := cfg.steering.validate(self.tokenizer.vocab_size):
            raise UsageError(problems[0])
        voice_of(self.model, cfg.voice)
        if cfg.seed is None:
            cfg.seed = int.from_bytes(os.urandom(6), "little")
        return encode_prime(self.tokenizer, prime, cfg.drop_unknown)

    def _group(self, cfg: SampleConfig, prime: str) -> Group:
        assert cfg.seed is not None  # `_checked` drew one
        generator = torch.Generator(device=self.device)
        generator.manual_seed(cfg.seed)
        steers = row_steers(cfg.steering, self.tokenizer.chars, cfg.num_samples, prime, self.device,
                            self.model.head.weight.dtype)
        return Group(cfg, generator, self.tokenizer.chars, steers)

    def _add(self, groups: list[Group], logits: Tensor, state: State) -> None:
        """Append primed groups to the batch: their rows' logits (R, V) and state (L, R, H), R = their samples."""
        parts = unpack_state(tuple(s.contiguous() for s in state))
        if self.groups:
            self.parts = [[torch.cat([a, b]) for a, b in zip(old, new, strict=True)]
                          for old, new in zip(self.parts, parts, strict=True)]
            self.logits = torch.cat([self.logits, logits])
        else:
            self.parts, self.logits = parts, logits.contiguous()
        self._races.add(groups)
        for group in groups:
            self.groups.append(group)
            self._rows.append(group.cfg.num_samples)
        self._settings = None

    def _prime(self, primed: Tensor, state: State) -> tuple[Tensor, State]:
        """Run primes (B0, P) through the network: the last position's logits (B0, V) and the state after it.

        A short prime on CPU goes through the fused `Stepper`: oneDNN's sequence kernel costs ~9 ms
        per call at batch 1 on a 2x512 LSTM whatever the length (it reorders the weights each call),
        which every request joining a busy server would otherwise add to the batch's next step.
        """
        if self.stepper is None or primed.size(1) > STEPPED_PRIME_MAX:
            logits, state = self.model(primed, state)
            return logits[:, -1], state
        parts = unpack_state(state)
        for t in range(primed.size(1)):
            last = self.stepper.step_layers(primed[:, t], parts)
        return last, pack_state(parts)

    def leave(self, group: Group) -> State:
        """Remove a group; returns its state (L, n, H), e.g. to continue it later."""
        i = self.groups.index(group)
        start = sum(self._rows[:i])
        rows = slice(start, start + self._rows[i])
        state = pack_state([[t[rows] for t in layers] for layers in self.parts])
        keep = torch.cat([torch.arange(0, start), torch.arange(rows.stop, sum(self._rows))]).to(self.device)
        self.parts = [[t.index_select(0, keep) for t in layers] for layers in self.parts]
        self.logits = self.logits.index_select(0, keep)
        self._races.remove(i, keep)
        del self.groups[i], self._rows[i]
        self._settings = None
        return state

    def step(self) -> list[tuple[Group, list[str]]]:
        """One character for every group still going: the pieces each produced (one per sample).

        A group that fails during the step is marked (`error`) and produces nothing; it keeps
        its rows until `leave`, so the batch's shape does not change under the other groups.
        """
        if not self.groups:
            return []
        live = [g.error is None for g in self.groups]
        top = self.logits.amax(dim=-1, keepdim=True)  # (B, 1)
        finite = math.isfinite(float(top.sum()))  # one check for the whole batch (a NaN anywhere makes it NaN)
        if not finite:
            self._fail_non_finite(live)
        sampling = any(g.cfg.temperature > 0 for g in self.groups)
        noise = self._races.take(self.groups, self._rows, live)
        ids = self._draw(noise if sampling else None, top if finite else None, live)
        scores = self._scores(ids, live)
        if self.stepper is not None and len(ids) <= FUSED_MAX_BATCH:
            self.logits = self.stepper.step_layers(ids, self.parts)  # (B, V)
        else:
            out, state = self.model(ids[:, None], pack_state(self.parts))  # (B, 1, V)
            self.logits = out[:, 0]
            self.parts = unpack_state(state)
        pieces = []
        drawn, start = ids.tolist(), 0
        for group, n, alive in zip(self.groups, self._rows, live, strict=True):
            start += n
            if not alive or group.error is not None:
                continue
            try:
                pieces.append((group, group.record(drawn[start - n : start], scores.get(id(group)))))
            except Exception as e:  # this group's bookkeeping broke: it ends, the others go on
                group.fail(e)
        return pieces

    def _draw(self, noise: Tensor | None, top: Tensor | None, live: list[bool]) -> Tensor:
        """One id per row (B,): from the model's scores, steered for the groups that steer (`Group.steer`, on a
        copy: the scores themselves stay the model's, for logprobs). Each steering group counts the draws its
        controls changed (the same races, with and without them)."""
        settings = self._batch_settings()
        steering = [(g, start, n) for g, start, n, alive in zip(self.groups, self._starts(), self._rows, live, strict=True)
                    if alive and g.steers is not None]
        if not steering:
            return sample_rows(self.logits, settings, noise, top)
        steered = self.logits.clone()
        for group, start, n in steering:
            group.steer(steered[start : start + n])
        ids = sample_rows(steered, settings, noise)
        plain = sample_rows(self.logits, settings, noise, top)
        for group, start, n in steering:
            group.changed += sum(1 for i, (a, b) in enumerate(zip(ids[start : start + n].tolist(),
                                                                   plain[start : start + n].tolist(), strict=True))
                                 if a != b and not group.done[i])
        return ids

    def _scores(self, ids: Tensor, live: list[bool]) -> dict[int, list[Logprob]]:
        """For the groups that asked (`cfg.logprobs`): their rows' `Logprob`s from this step's logits (B, V), before
        they are replaced; keyed by the group's id()."""
        if all(g.cfg.logprobs is None for g in self.groups):  # the usual case: nothing to do, per step
            return {}
        asking = [(g, start, n) for g, start, n, alive in zip(self.groups, self._starts(), self._rows, live, strict=True)
                  if alive and g.cfg.logprobs is not None]
        found = score_rows(self.logits, ids, [(start, n, g.cfg.logprobs or 0) for g, start, n in asking],
                           self.tokenizer.chars)
        return {id(g): rows for (g, _, _), rows in zip(asking, found, strict=True)}

    def _starts(self) -> list[int]:
        starts, at = [], 0
        for n in self._rows:
            starts.append(at)
            at += n
        return starts

    def _batch_settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.of([(n, g.cfg.temperature, g.cfg.top_k, g.cfg.top_p)
                                          for g, n in zip(self.groups, self._rows, strict=True)], self.device)
        return self._settings

    def _fail_non_finite(self, live: list[bool]) -> None:
        """A group whose rows hold NaN (its state blew up) ends with an error; one check for the batch."""
        bad = torch.isnan(self.logits).any(dim=-1)  # (B,)
        if not bool(bad.any()):  # +inf or all -inf: sample_rows handles those
            return
        for i, (group, rows) in enumerate(zip(self.groups, bad.split(self._rows), strict=True)):
            if live[i] and bool(rows.any()):
                group.fail(GenerationError("the model produced NaN scores for this request — its weights or state are broken; "
                                            "retrain or load another checkpoint"))
                live[i] = False


class Generation:
    """An iterator over generated text: each item is one new piece per sample (list of N strings).

    One group in an `Engine`. After iteration `state` holds the hidden state (batch N)
    for continuing, and `texts` the generated text of each sample (prime not included).
    """

    def __init__(self, model: CharRNN, tokenizer: CharTokenizer, prime: str, cfg: SampleConfig,
                 state: State | None = None):
        cfg.check()
        voice_of(model, cfg.voice)  # the voice and the prime fail here, before anything is printed
        encode_prime(tokenizer, prime, cfg.drop_unknown)
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.prime = prime
        self.state = state
        self._group: Group | None = None

    @property
    def texts(self) -> list[str]:
        return self._group.texts if self._group is not None else [""] * self.cfg.num_samples

    @property
    def changed(self) -> int:
        """Draws where the steering changed the character plain sampling would have drawn (`Engine._draw`)."""
        return self._group.changed if self._group is not None else 0

    @property
    def ended(self) -> list[str | None]:
        """Per sample: why its steering ended it before its length (None: it was not)."""
        return self._group.ended if self._group is not None else [None] * self.cfg.num_samples

    def __iter__(self) -> Iterator[list[str]]:
        with torch.inference_mode():
            engine = Engine(self.model, self.tokenizer)
            group = self._group = engine.join(self.prime, self.cfg, self.state)
            try:
                while not group.finished:
                    for _, pieces in engine.step():
                        yield pieces
                    if group.error is not None:
                        raise group.error
            finally:  # also on Ctrl-C or an abandoned iterator: the state matches the text produced so far
                self.state = engine.leave(group)


def generate(model: CharRNN, tokenizer: CharTokenizer, prime: str, cfg: SampleConfig,
             state: State | None = None) -> Generation:
    """Start a generation; iterate it to stream, or call `list(...)` and read `.texts`."""
    return Generation(model, tokenizer, prime, cfg, state)
