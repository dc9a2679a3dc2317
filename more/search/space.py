"""Declarative search spaces: parameters (float, int, log, step, categorical) and order constraints.

A space is written in a search spec as dotted config keys (the same keys as overrides everywhere)::

    space:
      pseudo.par_bg_low:  {type: float, low: 0.1, high: 0.4}
      pseudo.par_bg_high: {type: float, low: 0.5, high: 0.9, step: 0.05}
      lir.ure_kernel:     {type: int, low: 2, high: 6}
      lir.cre_weight:     {type: float, low: 0.01, high: 1.0, log: true}
      gcr.top_k:          {type: categorical, choices: [1, 2, 3]}
    constraints:
      - pseudo.par_bg_low < pseudo.par_bg_high            # or: pseudo.par_bg_low + 0.1 < pseudo.par_bg_high

:meth:`SearchSpace.sample` is an Optuna define-by-run function: the keys are sampled in an order where the left key
of every constraint comes first, and the right key's lower bound is raised above ``left + margin``, so no sampled
trial can violate a constraint (nothing is rejected after the fact).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from more.hints import did_you_mean

KINDS = ("float", "int", "categorical")
PARAM_KEYS = ("type", "low", "high", "log", "step", "choices")
_CONSTRAINT_RE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(?:\+\s*([0-9.eE+-]+)\s*)?<\s*([A-Za-z_][\w.]*)\s*$")


class SpaceError(ValueError):
    """A bad parameter or constraint; the message names the dotted key."""


@dataclass(frozen=True)
class Param:
    """One searched config key."""

    key: str
    kind: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Constraint:
    """``lower + margin < upper`` between two numeric parameters."""

    lower: str
    upper: str
    margin: float = 0.0

    def holds(self, values: dict[str, Any]) -> bool:
        return values[self.lower] + self.margin < values[self.upper]

    def __str__(self) -> str:
        plus = f" + {self.margin:g}" if self.margin else ""
        return f"{self.lower}{plus} < {self.upper}"


@dataclass(frozen=True)
class SearchSpace:
    """Parameters in sampling order (constraint left keys before right keys) and the constraints."""

    params: tuple[Param, ...]
    constraints: tuple[Constraint, ...] = ()

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def sample(self, trial: Any) -> dict[str, Any]:
        """Optuna define-by-run: suggest every parameter (dotted key as the name) and return the values."""
        values: dict[str, Any] = {}
        for p in self.params:
            if p.kind == "categorical":
                values[p.key] = trial.suggest_categorical(p.key, list(p.choices))
                continue
            low = self._raised_low(p, values)
            if p.kind == "int":
                values[p.key] = trial.suggest_int(p.key, int(low), int(p.high), step=int(p.step or 1), log=p.log)
            else:
                values[p.key] = trial.suggest_float(p.key, low, p.high, step=p.step, log=p.log)
        return values

    def _raised_low(self, p: Param, values: dict[str, Any]) -> float:
        """The parameter's lower bound, raised to the smallest value above ``lower + margin`` of its constraints."""
        low = p.low
        for c in self.constraints:
            if c.upper == p.key:
                low = max(low, _above(p, values[c.lower] + c.margin))
        return low

    def violations(self, values: dict[str, Any]) -> list[str]:
        """The constraints that ``values`` break (empty when all hold)."""
        return [str(c) for c in self.constraints if not c.holds(values)]


def _above(p: Param, bound: float) -> float:
    """The smallest value of ``p``'s domain strictly greater than ``bound``."""
    if p.kind == "int":
        step = int(p.step or 1)
        return p.low + (math.floor((bound - p.low) / step) + 1) * step
    if p.step is not None:
        k = math.floor((bound - p.low) / p.step + 1e-9) + 1
        return round(p.low + k * p.step, 12)
    return math.nextafter(bound, math.inf)



def parse_space(space: Any, constraints: Any = None, *, where: str = "space") -> SearchSpace:
    """Check a ``space`` mapping and ``constraints`` list from a spec.

    Raises:
        SpaceError: an unknown parameter field, a bad type or bounds, ``log`` with ``low <= 0``, a constraint on a
            key that is not searched or on a categorical key, a cycle, or a constraint no sample can meet.
    """
    if not isinstance(space, dict) or not space:
        raise SpaceError(f"{where}: need a non-empty mapping of dotted config key -> {{type, low, high, ...}}")
    params = {key: _param(str(key), value, where) for key, value in space.items()}
    if constraints is not None and not isinstance(constraints, list):  # a string would be read char by char
        raise SpaceError(f"constraints={constraints!r}: expected a list such as ['a.x < a.y']")
    parsed = [_constraint(c, params, where) for c in (constraints or [])]
    order = _order(list(params), parsed)
    for c in parsed:  # the right key must keep room above the left key's largest value
        lo, up = params[c.lower], params[c.upper]
        if not _above(up, lo.high + c.margin) <= up.high:
            raise SpaceError(f"constraints: '{c}' cannot hold when {c.lower} = {lo.high:g} (its high): "
                             f"{c.upper} <= {up.high:g}; lower {c.lower}.high or raise {c.upper}.high")
    return SearchSpace(tuple(params[k] for k in order), tuple(parsed))


def _param(key: str, value: Any, where: str) -> Param:
    name = f"{where}.{key}"
    if not isinstance(value, dict):
        raise SpaceError(f"{name}={value!r}: expected a mapping such as {{type: float, low: 0.1, high: 0.9}}")
    for field in value:
        if field not in PARAM_KEYS:
            hint = did_you_mean(field, PARAM_KEYS, cutoff=0.5, otherwise=f" (known: {', '.join(PARAM_KEYS)})")
            raise SpaceError(f"{name}: unknown field '{field}'{hint}")
    kind = value.get("type")
    if kind not in KINDS:
        raise SpaceError(f"{name}: type={kind!r} must be one of {', '.join(KINDS)}")
    if kind == "categorical":
        extra = set(value) - {"type", "choices"}
        choices = value.get("choices")
        if extra:
            raise SpaceError(f"{name}: a categorical takes only 'choices' (got {', '.join(sorted(extra))})")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"{name}: choices={choices!r}: need a non-empty list")
        if any(not isinstance(c, (bool, int, float, str, type(None))) for c in choices):
            raise SpaceError(f"{name}: choices must be numbers, strings, booleans or null (Optuna stores them)")
        return Param(key, kind, choices=tuple(choices))
    if "choices" in value:
        raise SpaceError(f"{name}: 'choices' is only for type categorical")
    low, high, log, step = value.get("low"), value.get("high"), value.get("log", False), value.get("step")
    for label, number in (("low", low), ("high", high)):
        if not _is_number(number) or (kind == "int" and not float(number).is_integer()):
            raise SpaceError(f"{name}: {label}={number!r}: need {'an integer' if kind == 'int' else 'a number'}")
    if not low < high:
        raise SpaceError(f"{name}: low={low!r} must be < high={high!r}")
    if not isinstance(log, bool):
        raise SpaceError(f"{name}: log={log!r}: need true or false")
    if log and low <= 0:
        raise SpaceError(f"{name}: log=true needs low > 0 (got low={low!r})")
    if step is not None:
        if log:
            raise SpaceError(f"{name}: step and log=true cannot be combined (Optuna refuses it)")
        if not _is_number(step) or step <= 0 or (kind == "int" and not float(step).is_integer()):
            raise SpaceError(f"{name}: step={step!r}: need a {'whole ' if kind == 'int' else ''}number > 0")
        if step > high - low:
            raise SpaceError(f"{name}: step={step!r} is larger than high - low = {high - low:g}")
    if kind == "int":
        return Param(key, kind, int(low), int(high), log, int(step) if step is not None else None)
    return Param(key, kind, float(low), float(high), log, float(step) if step is not None else None)


def _constraint(text: Any, params: dict[str, Param], where: str) -> Constraint:
    match = _CONSTRAINT_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise SpaceError(f"constraints: {text!r}: expected 'KEY < KEY' or 'KEY + MARGIN < KEY'")
    lower, margin_text, upper = match.groups()
    try:
        margin = float(margin_text) if margin_text else 0.0
    except ValueError:
        raise SpaceError(f"constraints: {text!r}: margin {margin_text!r} is not a number") from None
    if margin < 0:
        raise SpaceError(f"constraints: {text!r}: the margin must be >= 0")
    for key in (lower, upper):
        if key not in params:
            hint = did_you_mean(key, params, otherwise=f" (searched: {', '.join(params)})")
            raise SpaceError(f"constraints: {text!r}: '{key}' is not a key of {where}{hint}")
        if params[key].kind == "categorical":
            raise SpaceError(f"constraints: {text!r}: '{key}' is categorical; constraints need numeric keys")
    if lower == upper:
        raise SpaceError(f"constraints: {text!r}: a key cannot be constrained against itself")
    return Constraint(lower, upper, margin)


def _order(keys: list[str], constraints: list[Constraint]) -> list[str]:
    """Keys in spec order, moved so that every constraint's left key precedes its right key (a cycle is an error)."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(key: str) -> None:
        if key in order:
            return
        if key in visiting:
            raise SpaceError(f"constraints: a cycle through '{key}' (e.g. a < b and b < a) can never hold")
        visiting.add(key)
        for c in constraints:
            if c.upper == key:
                visit(c.lower)
        visiting.discard(key)
        order.append(key)

    for key in keys:
        visit(key)
    return order


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
