"""Hyperparameter search spaces: what `train.py --tune` searches for each model.

A space is a list of `HyperParameter`s, each either a training setting (a field of
TrainConfig: learning rate, weight decay, the loss's alpha) or an architecture argument that the
model module turns into constructor arguments. The spaces themselves are defined next to each
model (`unet.search_space`, `bsrnn.search_space`), sized from the preset so that a tiny preset
searches tiny models; `space_for(preset)` collects them. A JSON file narrows or replaces a
space (`apply_overrides`); names and ranges are checked, and a bad one is a one-line error.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from mss_tf.errors import ConfigError

KINDS = ("float", "int", "choice")


@dataclasses.dataclass(frozen=True)
class HyperParameter:
    """One searched value: `float`/`int` in [min, max] (log-uniform when `log`), or a `choice` of values.

    `field`: the TrainConfig field it sets; empty for an architecture argument.
    """

    name: str
    kind: str
    min: float | None = None
    max: float | None = None
    log: bool = False
    step: int | None = None
    values: tuple[Any, ...] = ()
    field: str = ""
    help: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"hyperparameter {self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind == "choice":
            if not self.values:
                raise ConfigError(f"hyperparameter {self.name}: empty list of values")
            if len(set(map(json.dumps, self.values))) != len(self.values):
                raise ConfigError(f"hyperparameter {self.name}: repeated values {list(self.values)}")
            return
        if self.min is None or self.max is None or not (math.isfinite(self.min) and math.isfinite(self.max)):
            raise ConfigError(f"hyperparameter {self.name}: needs finite min and max")
        if self.min > self.max:
            raise ConfigError(f"hyperparameter {self.name}: empty range, min {self.min:g} > max {self.max:g}")
        if self.log and self.min <= 0:
            raise ConfigError(f"hyperparameter {self.name}: a log range needs min > 0, got {self.min:g}")
        if self.kind == "int" and (self.min != int(self.min) or self.max != int(self.max)):
            raise ConfigError(f"hyperparameter {self.name}: int range needs whole numbers, got {self.min}..{self.max}")

    @property
    def target(self) -> str:
        return f"config.{self.field}" if self.field else "model"

    def describe(self) -> str:
        """The range as one short string: `1e-04 .. 0.003 (log)`, `{4, 8, 16}`."""
        if self.kind == "choice":
            return "{" + ", ".join(json.dumps(v) for v in self.values) + "}"
        low, high = (f"{v:g}" for v in (self.min, self.max))  # type: ignore[arg-type]
        extra = [" (log)" if self.log else "", f" step {self.step}" if self.step else ""]
        return f"{low} .. {high}{''.join(extra)}"

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"kind": self.kind}
        if self.kind == "choice":
            spec["values"] = list(self.values)
        else:
            spec.update({"min": self.min, "max": self.max, "log": self.log})
            if self.step:
                spec["step"] = self.step
        return spec

    def register(self, hp: Any) -> Any:
        """Declare this parameter on a keras_tuner HyperParameters object; returns its value."""
        if self.kind == "choice":
            return hp.Choice(self.name, list(self.values))
        if self.kind == "int":
            return hp.Int(self.name, int(self.min), int(self.max), step=self.step or 1,  # type: ignore[arg-type]
                          sampling="log" if self.log else "linear")
        return hp.Float(self.name, float(self.min), float(self.max), sampling="log" if self.log else "linear")  # type: ignore[arg-type]


def training_space(learning_rate: float, weight_decay: float) -> list[HyperParameter]:
    """The training settings every neural model searches, around its preset's values."""
    return [
        HyperParameter("learning_rate", "float", min(1e-4, learning_rate), max(3e-3, learning_rate), log=True,
                       field="learning_rate", help="Adam learning rate"),
        HyperParameter("weight_decay", "float", 1e-7, max(1e-3, weight_decay), log=True, field="weight_decay",
                       help="coupled L2 weight decay"),
        HyperParameter("loss_alpha", "float", 0.2, 0.8, field="loss_alpha",
                       help="weight of the magnitude term of the loss (the rest is phase)"),
    ]


@dataclasses.dataclass
class SearchSpace:
    """A model's hyperparameters and the function that turns chosen values into model arguments."""

    parameters: list[HyperParameter]
    model_kwargs: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]  # (values, preset kwargs) -> kwargs

    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    def table(self) -> str:
        width = max(len(p.name) for p in self.parameters)
        lines = [f"{'hyperparameter':<{max(width, 14)}}  {'sets':<22}  range"]
        lines += [f"{p.name:<{max(width, 14)}}  {p.target:<22}  {p.describe()}    {p.help}" for p in self.parameters]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {p.name: p.to_dict() for p in self.parameters}

    def apply(self, values: dict[str, Any], config: Any, preset_kwargs: dict[str, Any]) -> Any:
        """Set the chosen `values` on a TrainConfig (fields and model arguments); returns it."""
        by_name = {p.name: p for p in self.parameters}
        for name, value in values.items():
            if name in by_name and by_name[name].field:
                setattr(config, by_name[name].field, value)
        architecture = {n: v for n, v in values.items() if n in by_name and not by_name[n].field}
        config.model_kwargs = {**config.model_kwargs, **self.model_kwargs(architecture, {**preset_kwargs, **config.model_kwargs})}
        return config


SPEC_KEYS = {"float": {"kind", "min", "max", "log"}, "int": {"kind", "min", "max", "log", "step"},
             "choice": {"kind", "values"}}


def apply_overrides(space: SearchSpace, overrides: dict[str, Any], where: str) -> SearchSpace:
    """Narrow or replace a space from a JSON object.

    `{"learning_rate": {"min": 1e-4, "max": 1e-3}, "band_scheme": {"values": ["v7"]}, "loss_alpha": null}`:
    each named parameter takes the given keys over its default range; `null` removes it from the
    search (it keeps the preset's value). `"replace": true` searches only the names in the file.
    Only the model's own parameter names are allowed.
    """
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: expected a JSON object of hyperparameter names, got {type(overrides).__name__}")
    replace = overrides.pop("replace", False)
    if not isinstance(replace, bool):
        raise ConfigError(f"{where}: \"replace\" must be true or false, got {replace!r}")
    by_name = {p.name: p for p in space.parameters}
    for name in overrides:
        if name not in by_name:
            raise ConfigError(f"{where}: unknown hyperparameter {name!r} (this model searches {', '.join(by_name)})")
    chosen = []
    for parameter in space.parameters:
        if parameter.name not in overrides:
            if not replace:
                chosen.append(parameter)
            continue
        spec = overrides[parameter.name]
        if spec is None:
            continue
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: {parameter.name} must be an object such as {json.dumps(parameter.to_dict())} or null")
        kind = spec.get("kind", parameter.kind)
        unknown = set(spec) - SPEC_KEYS.get(kind, set())
        if kind not in KINDS or unknown:
            raise ConfigError(f"{where}: {parameter.name}: unknown key(s) {', '.join(sorted(unknown)) or kind!r} "
                              f"(a {parameter.kind} takes {', '.join(sorted(SPEC_KEYS[parameter.kind]))})")
        merged = {**({} if kind != parameter.kind else parameter.to_dict()), **spec, "kind": kind}
        if "values" in merged:
            if not isinstance(merged["values"], list):
                raise ConfigError(f"{where}: {parameter.name}: \"values\" must be a list")
            merged["values"] = tuple(merged["values"])
        try:
            chosen.append(HyperParameter(parameter.name, field=parameter.field, help=parameter.help, **merged))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        except TypeError:
            raise ConfigError(f"{where}: {parameter.name}: a {kind} needs {', '.join(sorted(SPEC_KEYS[kind] - {'kind'}))}") from None
    if not chosen:
        raise ConfigError(f"{where}: leaves nothing to search")
    return SearchSpace(chosen, space.model_kwargs)


def load_overrides(path: str | Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def scaled_choices(value: int, factors: Sequence[float], minimum: int = 1) -> tuple[int, ...]:
    """Sorted distinct whole values around a preset's value: value x each factor."""
    return tuple(sorted({max(minimum, int(round(value * f))) for f in factors}))
