"""Parameter kinds of a tunekit Space: Float, Int, Categorical, Ordinal, Constant.

Each record validates itself on construction (errors name the parameter) and knows its own slice of the
unit-cube encoding: ``width`` columns, ``encode`` / ``decode`` / ``sample``. Floats decoded from the cube are
rounded to about 10 significant digits so that decoded values are fixed points of encode/decode (see
:mod:`tunekit.space`). No torch, no Ray here.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Mapping, Sequence, Union

import numpy as np

# Significant decimal digits kept by decoded floats (see the module docstring).
_FLOAT_DIGITS = 10
# Largest magnitude of an Int bound: integers up to it survive the float64 unit-cube encoding exactly
# (linear and log scale); beyond it, encode/decode would no longer give back the same integer.
MAX_INT = 2**40
# Most grid points of a Float with a step: beyond it, low + k * step no longer tells neighbours apart.
MAX_STEPS = 2**40


def _json_key(value: Any) -> str:
    """Identity of a JSON-able value: 1, 1.0 and True are three different values, (1, 2) equals [1, 2]."""
    return json.dumps(value, sort_keys=True, allow_nan=False)


def _plain(value: Any) -> Any:
    """Numpy scalars (and containers of them) as plain Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def same_value(a: Any, b: Any) -> bool:
    """Equality that tells 1, 1.0 and True apart for JSON-able values and falls back to ``==``/``is``."""
    try:
        return _json_key(_plain(a)) == _json_key(_plain(b))
    except (TypeError, ValueError):
        try:
            return a is b or bool(a == b)
        except Exception:  # objects whose == is not a bool (arrays) are equal only by identity
            return False


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, (bool, np.bool_))


def _is_finite(value: Any) -> bool:
    """True for a number that is a finite float64 (an int too large for a float is not)."""
    try:
        return _is_number(value) and math.isfinite(value)
    except OverflowError:
        return False


def _finite_number(name: str, field_name: str, value: Any) -> float:
    if not _is_number(value):
        raise TypeError(f"parameter {name!r}: {field_name} must be a finite number, got {value!r}")
    if not _is_finite(value):
        raise ValueError(f"parameter {name!r}: {field_name} must be a finite number, got {value!r}")
    return float(value)


def _integer(name: str, field_name: str, value: Any) -> int:
    if not (_is_number(value) and (isinstance(value, Integral) or float(value).is_integer())):
        raise TypeError(f"parameter {name!r}: {field_name} must be an integer, got {value!r}")
    if not -MAX_INT <= value <= MAX_INT:
        raise ValueError(f"parameter {name!r}: {field_name} must be an integer in [-2**40, 2**40] (exact in "
                         f"the float encoding), got {value!r}")
    return int(value)


def _check_bool(name: str, field_name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"parameter {name!r}: {field_name} must be True or False, got {value!r}")
    return bool(value)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name or "" in name.split("/"):
        raise ValueError(f"parameter name must be a non-empty string of '/'-separated parts, got {name!r}")


def _round_half_up(x: np.ndarray) -> np.ndarray:
    """Nearest integer with halves rounded up (numpy's rint rounds halves to even)."""
    return np.floor(x + 0.5)


def _to_unit(x: np.ndarray, low: float, high: float, log: bool) -> np.ndarray:
    """Map values in [low, high] to [0, 1], affinely in log space when ``log``."""
    if log:
        return (np.log(x) - math.log(low)) / (math.log(high) - math.log(low))
    return (x - low) / (high - low)


def _from_unit(u: np.ndarray, low: float, high: float, log: bool) -> np.ndarray:
    """Inverse of :func:`_to_unit`; ``u`` is clipped to [0, 1] first."""
    u = np.clip(u, 0.0, 1.0)
    if log:
        return np.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    return low + u * (high - low)


@dataclass(frozen=True)
class _Range:
    """Shared part of Float and Int: bounds low < high, a log scale needing low > 0, one encoded column."""

    name: str
    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name)
        number = _integer if isinstance(self, Int) else _finite_number
        low, high = number(self.name, "low", self.low), number(self.name, "high", self.high)
        if not low < high:
            raise ValueError(f"parameter {self.name!r}: low={low} must be < high={high} "
                             "(use Constant for a fixed value)")
        if not math.isfinite(high - low):
            raise ValueError(f"parameter {self.name!r}: the range high - low = {high} - {low} overflows a float")
        log = _check_bool(self.name, "log", self.log)
        if log and low <= 0:
            raise ValueError(f"parameter {self.name!r}: a log scale needs low > 0, got low={low}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "log", log)

    @property
    def width(self) -> int:
        return 1

    def encode(self, values: Sequence[Any]) -> np.ndarray:
        """(n,) values -> (n, 1) unit-cube column (log space when ``log``)."""
        x = np.clip(np.asarray(values, dtype=np.float64), self.low, self.high)
        return _to_unit(x, self.low, self.high, self.log)[:, None]


@dataclass(frozen=True)
class Float(_Range):
    """A real parameter on [low, high]; log scale when ``log``; only the grid low + k*step when ``step``."""

    step: float | None = None
    default: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.step is not None:
            step = _finite_number(self.name, "step", self.step)
            if not 0 < step <= (self.high - self.low) * (1 + 1e-9):  # a range of one step may round below it
                raise ValueError(f"parameter {self.name!r}: step={step} must be > 0 and at most "
                                 f"high - low = {self.high - self.low}")
            if (self.high - self.low) / step > MAX_STEPS:
                raise ValueError(f"parameter {self.name!r}: step={step} makes more than 2**40 grid points "
                                 f"on [{self.low}, {self.high}]; use a larger step or none")
            object.__setattr__(self, "step", step)
        if self.default is not None:
            self.check(self.default, "default")
            object.__setattr__(self, "default", self.decode(self.encode([self.default]))[0])

    @property
    def n_steps(self) -> int:
        """Index of the top grid value (the grid is low + k*step for k = 0..n_steps); needs ``step``."""
        return int(math.floor((self.high - self.low) / self.step + 1e-9))

    @property
    def cardinality(self) -> int | None:
        return None if self.step is None else self.n_steps + 1

    def _canonical(self, x: float) -> float:
        if self.log:
            value = float(f"{x:.{_FLOAT_DIGITS}g}")
        else:
            value = round(float(x), _FLOAT_DIGITS - 1 - math.floor(math.log10(self.high - self.low)))
        return min(max(value + 0.0, self.low), self.high)  # + 0.0: a rounded -0.0 becomes 0.0, a fixed point

    def _grid_value(self, k: int) -> float:
        digits = _FLOAT_DIGITS - 1 - math.floor(math.log10(self.step))
        return min(max(round(self.low + k * self.step, digits) + 0.0, self.low), self.high)

    def check(self, value: Any, what: str = "value") -> None:
        """Raise ValueError unless ``value`` lies in [low, high] (and on the step grid, within 1e-9)."""
        span = self.high - self.low
        if not _is_finite(value) or not self.low - 1e-9 * span <= value <= self.high + 1e-9 * span:
            raise ValueError(f"parameter {self.name!r}: {what} {value!r} is not a float in "
                             f"[{self.low}, {self.high}]")
        if self.step is not None:
            k = round((value - self.low) / self.step)
            tol = 1e-9 * self.step + 8 * float(np.spacing(max(abs(self.low), abs(self.high))))
            if abs(value - (self.low + k * self.step)) > tol:
                raise ValueError(f"parameter {self.name!r}: {what} {value!r} is not on the grid "
                                 f"{self.low} + k * {self.step}")

    def decode(self, block: np.ndarray) -> list[float]:
        """(n, 1) unit-cube column -> n valid values (snapped to the step grid when ``step``)."""
        x = _from_unit(block[:, 0], self.low, self.high, self.log)
        if self.step is None:
            return [self._canonical(v) for v in x]
        k = np.clip(_round_half_up((x - self.low) / self.step), 0, self.n_steps)
        return [self._grid_value(int(i)) for i in k]

    def sample(self, rng: np.random.Generator, n: int) -> list[float]:
        """n values: uniform (log-uniform when ``log``); a linear grid is sampled uniformly over its points."""
        if self.step is not None and not self.log:
            return [self._grid_value(int(k)) for k in rng.integers(0, self.n_steps + 1, size=n)]
        return self.decode(rng.random((n, 1)))


@dataclass(frozen=True)
class Int(_Range):
    """An integer parameter on [low, high], bounds inclusive; log scale when ``log``."""

    low: int
    high: int
    default: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.default is not None:
            self.check(self.default, "default")
            object.__setattr__(self, "default", int(self.default))

    @property
    def cardinality(self) -> int:
        return self.high - self.low + 1

    def check(self, value: Any, what: str = "value") -> None:
        """Raise ValueError unless ``value`` is an integer in [low, high]."""
        integral = isinstance(value, Integral) or _is_finite(value) and float(value).is_integer()
        if not (_is_number(value) and integral and self.low <= value <= self.high):
            raise ValueError(f"parameter {self.name!r}: {what} {value!r} is not an integer in "
                             f"[{self.low}, {self.high}]")

    def decode(self, block: np.ndarray) -> list[int]:
        """(n, 1) unit-cube column -> n integers (nearest, halves up)."""
        x = _from_unit(block[:, 0], self.low, self.high, self.log)
        return [int(v) for v in np.clip(_round_half_up(x), self.low, self.high)]

    def sample(self, rng: np.random.Generator, n: int) -> list[int]:
        """n integers, uniform over the integers (log-uniform over [low - 1/2, high + 1/2] when ``log``)."""
        if not self.log:
            return [int(v) for v in rng.integers(self.low, self.high + 1, size=n)]
        x = np.exp(rng.uniform(math.log(self.low - 0.5), math.log(self.high + 0.5), size=n))
        return [int(v) for v in np.clip(_round_half_up(x), self.low, self.high)]


@dataclass(frozen=True)
class _Values:
    """Shared part of Categorical and Ordinal: a non-empty tuple of unique JSON-able values.

    ``default=None`` means "no default", so a None value can be chosen but not be the default.
    """

    name: str
    values: tuple
    default: Any = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        values = self.values.tolist() if isinstance(self.values, np.ndarray) else self.values
        if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Sequence):
            raise TypeError(f"parameter {self.name!r}: values must be a list or tuple, got {values!r}")
        try:
            values = tuple(_plain(v) for v in values)
        except RecursionError:
            raise ValueError(f"parameter {self.name!r}: values are nested too deeply") from None
        if not values:
            raise ValueError(f"parameter {self.name!r}: values must hold at least one value, got none")
        index = {}
        for i, value in enumerate(values):
            try:
                key = _json_key(value)
            except (TypeError, ValueError, RecursionError):
                raise TypeError(f"parameter {self.name!r}: value {value!r} is not JSON-able; values must be "
                                "str, int, float (finite), bool, None, lists or dicts of those") from None
            if key in index:
                raise ValueError(f"parameter {self.name!r}: value {value!r} appears more than once")
            index[key] = i
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "_index", index)
        if self.default is not None:
            object.__setattr__(self, "default", self.values[self.index_of(self.default, "default")])

    def index_of(self, value: Any, what: str = "value") -> int:
        """Position of ``value`` in ``values``; ValueError naming the parameter when absent."""
        try:
            return self._index[_json_key(_plain(value))]
        except (KeyError, TypeError, ValueError, RecursionError):
            raise ValueError(f"parameter {self.name!r}: {what} {value!r} is not one of "
                             f"{list(self.values)!r}") from None

    @property
    def cardinality(self) -> int:
        return len(self.values)

    def check(self, value: Any, what: str = "value") -> None:
        self.index_of(value, what)

    def sample(self, rng: np.random.Generator, n: int) -> list:
        """n values drawn uniformly."""
        return [self.values[int(i)] for i in rng.integers(0, len(self.values), size=n)]


@dataclass(frozen=True)
class Categorical(_Values):
    """An unordered choice among ``values``, encoded one-hot (one column per value)."""

    @property
    def width(self) -> int:
        return len(self.values)

    def encode(self, values: Sequence[Any]) -> np.ndarray:
        """(n,) values -> (n, len(values)) one-hot block."""
        block = np.zeros((len(values), len(self.values)))
        block[np.arange(len(values)), [self.index_of(v) for v in values]] = 1.0
        return block

    def decode(self, block: np.ndarray) -> list:
        """(n, len(values)) block -> n values by argmax (first on ties)."""
        return [self.values[int(i)] for i in np.argmax(block, axis=1)]


@dataclass(frozen=True)
class Ordinal(_Values):
    """An ordered choice among ``values``, encoded by rank / (k - 1) (0.5 for a single value)."""

    @property
    def width(self) -> int:
        return 1

    def encode(self, values: Sequence[Any]) -> np.ndarray:
        """(n,) values -> (n, 1) rank column."""
        ranks = np.array([self.index_of(v) for v in values], dtype=np.float64)
        k = len(self.values)
        return (ranks / (k - 1) if k > 1 else np.full_like(ranks, 0.5))[:, None]

    def decode(self, block: np.ndarray) -> list:
        """(n, 1) rank column -> n values at the nearest rank."""
        k = len(self.values)
        ranks = np.clip(_round_half_up(np.clip(block[:, 0], 0.0, 1.0) * (k - 1)), 0, k - 1)
        return [self.values[int(r)] for r in ranks]


@dataclass(frozen=True)
class Constant:
    """A fixed value (any Python object; JSON-able ones survive :meth:`Space.to_dict`). No encoded column."""

    name: str
    value: Any

    def __post_init__(self) -> None:
        _check_name(self.name)
        try:
            object.__setattr__(self, "value", _plain(self.value))
        except RecursionError:
            raise ValueError(f"parameter {self.name!r}: the constant is nested too deeply") from None

    @property
    def default(self) -> Any:
        return self.value

    @property
    def width(self) -> int:
        return 0

    @property
    def cardinality(self) -> int:
        return 1

    def check(self, value: Any, what: str = "value") -> None:
        if not same_value(value, self.value):
            raise ValueError(f"parameter {self.name!r}: {what} {value!r} differs from the constant {self.value!r}")

    def encode(self, values: Sequence[Any]) -> np.ndarray:
        return np.zeros((len(values), 0))

    def decode(self, block: np.ndarray) -> list:
        return [self.value] * block.shape[0]

    def sample(self, rng: np.random.Generator, n: int) -> list:
        return [self.value] * n


Parameter = Union[Float, Int, Categorical, Ordinal, Constant]
PARAMETER_TYPES = (Float, Int, Categorical, Ordinal, Constant)
