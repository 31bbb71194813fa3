"""The HTTP API: Litestar adapters over a service layer that has no Litestar in it."""

from inferq.api.app import begin_drain, create_app
from inferq.api.fastpath import FastPredict

__all__ = ["FastPredict", "begin_drain", "create_app"]
