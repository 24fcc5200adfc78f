"""Log-probabilities of drawn characters: what `SampleConfig.logprobs` asks the engine to record, per step."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MAX_TOP_LOGPROBS = 20  # the most alternatives recorded per character (OpenAI's chat limit)


@dataclass(frozen=True)
class Logprob:
    """One drawn character's log-probability under the model (log_softmax of its logits, before temperature
    and filtering) and the most likely characters at that position, most likely first."""

    char: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


def score_rows(logits: Tensor, ids: Tensor, spans: list[tuple[int, int, int]], chars: list[str]) -> list[list[Logprob]]:
    """For each (start, n, k) span of rows: the drawn ids' (B,) log-probabilities under `logits` (B, V) and the k
    most likely characters, in one batched pass over the rows asked for."""
    rows = torch.cat([torch.arange(start, start + n) for start, n, _ in spans]).to(logits.device)
    logp = torch.log_softmax(logits.index_select(0, rows).float(), dim=-1)  # (R, V), float32 on every device
    drawn = ids.index_select(0, rows)
    chosen = logp.gather(1, drawn[:, None])[:, 0].tolist()  # (R,)
    k = min(max(top for _, _, top in spans), logp.size(1))
    best = logp.topk(k, dim=-1) if k else None
    # (R, k) each; with k 0 (logprobs 0: only the drawn characters' own), an empty row per character
    values, where = (best.values.tolist(), best.indices.tolist()) if best is not None else ([[]] * len(chosen),) * 2
    picked, out, r = drawn.tolist(), [], 0
    for _, n, top in spans:
        keep = min(top, k)
        out.append([Logprob(chars[picked[r + j]], chosen[r + j],
                            tuple(zip([chars[c] for c in where[r + j][:keep]], values[r + j][:keep], strict=True)))
                    for j in range(n)])
        r += n
    return out
