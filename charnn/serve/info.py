"""The routes that do not generate: the page, health, the model list, and scoring a text."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse

from charnn import page as pages
from charnn.api import CharModel, unscorable
from charnn.errors import CharnnError
from charnn.run import checkpoint
from charnn.serve.access import authorized, check_voice, pick, served_of
from charnn.serve.protocol import ALWAYS, GENERATING, ApiError, ScoreRequest, responses_for
from charnn.serve.replies import Health, ModelList, Score

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(pages.generator("server"))


@router.get("/health", responses={200: {"model": Health}, **responses_for(*ALWAYS), 503: {"model": Health,
    "description": "A model's generation engine failed and could not restart: the server cannot generate."}})
async def health(request: Request) -> Any:
    """`ok` while every model's engine runs; 503 once one has failed for good."""
    served = served_of(request)
    models = {s.name: {"rows": (load := s.batcher.load)[0], "waiting": load[1], "alive": s.batcher.alive} for s in served}
    if all(m["alive"] for m in models.values()):
        return {"status": "ok", "models": models}
    return JSONResponse({"status": "unhealthy", "models": models}, 503)


@router.get("/v1/models", dependencies=[Depends(authorized)],
            responses={200: {"model": ModelList}, **responses_for(*ALWAYS, 401)})
async def models(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": s.name, "object": "model", "created": s.facts.get("created", 0),
                                        "owned_by": "charnn", "charnn": s.facts} for s in served_of(request)]}


@router.post("/v1/score", dependencies=[Depends(authorized)], responses={200: {"model": Score},
                                                                        **responses_for(*GENERATING)})
async def score(body: ScoreRequest, request: Request) -> dict[str, Any]:
    """charnn extension: how well the model predicts a text (nats and bits per character)."""
    target = pick(request, body.model)
    check_voice(target, body.voice)
    ids, unknown = target.model.tokenizer.encode_known(body.text)
    if len(ids) < 2:
        why = unscorable(len(ids), unknown) if unknown else f"text has {len(ids)} character(s); scoring needs at least 2"
        raise ApiError(400, f"model '{target.name}': {why}", "text", "unknown_characters")
    try:
        worker = target.batcher.worker  # a long text shares it with the batches, window by window
        result = await asyncio.wrap_future(worker.call(lambda: target.model.score(body.text, between=worker.share,
                                                                                      voice=body.voice)))
    except CharnnError as e:  # anything else the library refuses is still this request's fault
        raise ApiError(400, str(e), "text") from None
    return {"object": "score", "model": target.name, "characters": result.characters, "nats": result.nats,
            "bits_per_character": result.bpc, "perplexity": result.perplexity,
            "unknown_characters": sum(result.unknown.values()), "unknown": result.unknown}


def facts_of(model: CharModel) -> dict[str, Any]:
    """What the page and GET /v1/models show about a run."""
    cfg = model.model.config
    metrics = checkpoint.read_metrics(model.run_dir)
    vals = [r["val_loss"] for r in metrics if isinstance(r.get("val_loss"), (int, float))]
    best = min(vals) if vals else None
    created = model.config.created
    try:
        stamp = int(time.mktime(time.strptime(created, "%Y-%m-%dT%H:%M:%S")))
    except (TypeError, ValueError):
        stamp = 0
    return {"cell": cfg.cell, "layers": cfg.layers, "hidden": cfg.hidden, "parameters": model.model.num_parameters(),
            "vocabulary": cfg.vocab_size, "step": model.step,
            "characters_seen": max((r.get("tokens", 0) for r in metrics), default=0),
            "voices": list(cfg.voices), "alphabet": list(model.tokenizer.chars), "best_val_loss": best,
            "best_val_bpc": None if best is None else best / math.log(2), "created": stamp}
