"""The baseline: a Litestar handler that validates and calls ONNX Runtime in-process (no queue).

Run by bench/queue_path.py as ``uvicorn bench.naive_server:app --workers 2``; the model comes from
``BENCH_MODEL_FILE`` (an .onnx path). Same input validation and output shape as inferq's v1 API.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody

from inferq.engine import Runner, to_predictions
from inferq.inputs import to_feeds
from inferq.settings import EngineSettings


class PredictBody(msgspec.Struct, forbid_unknown_fields=True):
    inputs: Any


@asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    with open(os.environ["BENCH_MODEL_FILE"], "rb") as f:
        app.state.runner = Runner.load(f.read(), settings=EngineSettings(intra_op_threads=1))
    yield
    app.state.runner.close()


@post("/v1/models/{model:str}/predict", status_code=200)
async def predict(model: FromPath[str], data: JSONBody[PredictBody], state: State) -> dict[str, Any]:
    runner: Runner = state.runner
    feeds = to_feeds(data.inputs, runner.signature)
    return {"model": model, "predictions": to_predictions(runner.signature, runner.run(feeds))}


app = Litestar(route_handlers=[predict], lifespan=[lifespan], openapi_config=None, logging_config=None)
