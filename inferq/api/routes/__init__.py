"""Route handlers: thin adapters that read HTTP, call one service method, and write HTTP."""

from inferq.api.routes.health import health_backlog, health_live, health_ready, metrics_text
from inferq.api.routes.models import get_model, list_models
from inferq.api.routes.predictions import get_prediction, predict, predict_version

HANDLERS = [
    predict,
    predict_version,
    get_prediction,
    list_models,
    get_model,
    health_live,
    health_ready,
    health_backlog,
    metrics_text,
]

__all__ = ["HANDLERS"]
