"""Model metadata: tensor specs, signatures, references like ``wine@2``, versions and aliases."""

from __future__ import annotations

import datetime as dt
import re
from typing import Literal

import msgspec

from inferq.errors import InvalidInput

Task = Literal["classifier", "regressor", "tensor"]
VersionStatus = Literal["active", "deprecated", "archived"]
VERSION_STATUSES: tuple[VersionStatus, ...] = ("active", "deprecated", "archived")

# numpy dtype names that the engine, the inputs package and the wire format all accept.
DType = Literal["float32", "float64", "int32", "int64", "bool", "string"]


class TensorSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One model input or output: name, dtype and shape (``None`` = dynamic dimension)."""

    name: str
    dtype: DType
    shape: tuple[int | None, ...]


class ModelSignature(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a model takes and returns, read from its ONNX file and metadata props.

    ``classes`` are the labels as the model emits them (``[0, 1, 2]`` or ``["a", "b"]``);
    ``class_names`` are human names for them, in the same order, when the metadata has them.
    ``label_output``, ``probabilities_output`` and ``value_output`` name the outputs that
    postprocessing reads. ``allow_nan`` (metadata prop ``inferq.allow_nan``) lets NaN and
    infinite values through input validation, for models that handle missing values.
    """

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    task: Task = "tensor"
    feature_names: tuple[str, ...] | None = None
    # NOTE: one tuple type: msgspec cannot decode a union of two array-like types.
    classes: tuple[int | str, ...] | None = None
    class_names: tuple[str, ...] | None = None
    label_output: str | None = None
    probabilities_output: str | None = None
    value_output: str | None = None
    allow_nan: bool = False
    # Operators whose output is random (RandomNormal, Multinomial, …): such a model cannot use the result cache.
    nondeterministic_ops: tuple[str, ...] = ()

    @property
    def n_features(self) -> int | None:
        """Width of the single 2-D input, when the model has one (records and rows need it)."""
        if len(self.inputs) != 1 or len(self.inputs[0].shape) != 2:
            return None
        return self.inputs[0].shape[1]


_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
DEFAULT_ALIAS = "default"


def check_model_name(name: str) -> str:
    """Validate a model name: lowercase letters, digits, ``_ . -``; at most 63 characters."""
    if not _NAME.fullmatch(name):
        raise InvalidInput(
            f"invalid model name {name!r}: use 1-63 lowercase letters, digits, '_', '.' or '-'",
            field="model",
        )
    return name


def check_alias_name(alias: str) -> str:
    if not _ALIAS.fullmatch(alias):
        raise InvalidInput(
            f"invalid alias {alias!r}: start with a letter; lowercase letters, digits, '_' or '-'",
            field="alias",
        )
    return alias


class ModelRef(msgspec.Struct, frozen=True, kw_only=True):
    """A caller's choice of model: ``wine`` (the default alias), ``wine@2`` or ``wine@prod``."""

    name: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        name, sep, selector = text.strip().partition("@")
        check_model_name(name)
        if not sep:
            return cls(name=name, alias=DEFAULT_ALIAS)
        if selector.isdecimal():
            version = int(selector)
            if version < 1:
                raise InvalidInput(f"invalid version in {text!r}: versions start at 1", field="model")
            return cls(name=name, version=version)
        return cls(name=name, alias=check_alias_name(selector))

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        return self.name if self.alias == DEFAULT_ALIAS else f"{self.name}@{self.alias}"


class ModelVersion(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One registered, immutable version of a model."""

    model: str
    version: int
    status: VersionStatus
    signature: ModelSignature
    sha256: str
    size_bytes: int
    created_at: dt.datetime
    description: str | None = None
    overrides: dict[str, int | float] = {}

    @property
    def key(self) -> str:
        """The partition name, ``model@version``."""
        return f"{self.model}@{self.version}"


class Shadow(msgspec.Struct, frozen=True, kw_only=True):
    """Mirror ``share`` percent of an alias's requests to ``version``: run and logged, never answered."""

    version: int
    share: int


class Alias(msgspec.Struct, frozen=True, kw_only=True):
    """A named pointer to versions with traffic weights (``{2: 95, 3: 5}``; one entry = a pin).

    ``fallback``: a request whose chosen version cannot serve goes to the previous active version.
    ``previous``: the weights before the last change (what a rollback restores).
    """

    model: str
    name: str
    weights: dict[int, int]
    fallback: bool = False
    shadow: Shadow | None = None
    previous: dict[int, int] | None = None


class ModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A model with its versions and aliases, as listed by ``inferq models list``."""

    name: str
    created_at: dt.datetime
    versions: tuple[ModelVersion, ...]
    aliases: tuple[Alias, ...]
    description: str | None = None
