"""The one search-space model of tunekit: parameter kinds, converters in, one unit-cube encoding out.

Every model-based searcher works in the encoded unit cube ``[0, 1]^dim`` and never looks at Ray domains or
ConfigSpace objects itself. Configurations handled here are FLAT dicts keyed by path names ("opt/lr" for the
nested Ray key ``{"opt": {"lr": ...}}``); :meth:`Space.flatten` / :meth:`Space.unflatten` convert.

Float round-trips: decoded floats are rounded to about 10 significant digits (of the range on a linear
scale, of the value on a log scale), so values that :meth:`Space.decode` and :meth:`Space.sample` produce
are fixed points: ``decode(encode([c])) == [c]`` holds exactly for them and for any value given with at
most that many digits (bounds no larger than 1e5 times the range); other floats come back within ~1e-9
of the range (linear) or of the value (log). Ints, steps, categoricals, ordinals and constants round-trip
exactly.

This module imports neither torch nor Ray Tune; converters import Ray Tune / ConfigSpace lazily.
"""


from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from tunekit.parameters import (Float, Int, Categorical, Ordinal, Constant, Parameter, PARAMETER_TYPES, same_value)

__all__ = ["Space", "Float", "Int", "Categorical", "Ordinal", "Constant", "Parameter"]


class Space:
    """An ordered set of parameters with one unit-cube encoding.

    Columns of the encoding follow ``params`` in order: one per Float/Int/Ordinal, ``len(values)`` per
    Categorical (one-hot), none per Constant.
    """

    def __init__(self, params: Sequence[Parameter]):
        params = tuple(params)
        by_name: dict[str, Parameter] = {}
        for param in params:
            if not isinstance(param, PARAMETER_TYPES):
                raise TypeError(f"Space takes Float, Int, Categorical, Ordinal or Constant records, "
                                f"got {param!r}")
            if param.name in by_name:
                raise ValueError(f"parameter {param.name!r} appears more than once")
            by_name[param.name] = param
        for name in by_name:
            parts = name.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in by_name:
                    raise ValueError(f"parameter {name!r} is nested under parameter {'/'.join(parts[:i])!r}; "
                                     "a path name cannot be both a value and a group")
        self._params = params
        self._by_name = by_name
        offsets = np.cumsum([0] + [p.width for p in params])
        self._slices = tuple(slice(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:]))

    # --- constructors ---------------------------------------------------------------------------

    @classmethod
    def from_tune(cls, param_space: Mapping[str, Any]) -> "Space":
        """From a Ray Tune ``param_space`` (domains, plain constants, nested dicts -> "a/b" names).

        ``randint``/``lograndint`` upper bounds are exclusive in Ray: ``randint(2, 9)`` is ``Int(2, 8)``.
        ``qrandint``/``qlograndint`` with ``q > 1`` become an Ordinal of the multiples of ``q`` in range
        (``qlograndint`` then samples them uniformly, not log-uniformly). ``grid_search``, ``sample_from``
        and ``randn`` are rejected.
        """
        from tunekit._space_converters import params_from_tune

        return cls(params_from_tune(param_space))

    @classmethod
    def from_configspace(cls, configspace: Any) -> "Space":
        """From a ConfigSpace 1.x ``ConfigurationSpace`` (uniform float/int, categorical, ordinal, constant).

        Conditions, forbidden clauses, normal/beta hyperparameters and non-uniform weights are rejected.
        """
        from tunekit._space_converters import params_from_configspace

        return cls(params_from_configspace(configspace))

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any], starting_point: Mapping[str, Any] | None = None) -> "Space":
        """From plain data, as written by :meth:`to_dict`, plus maggy and DeepHyper forms.

        Entry forms: ``{"type": "float"|"int"|"categorical"|"ordinal"|"constant", ...}``; maggy's
        ``("INTEGER", [lo, hi])``, ``("DOUBLE", [lo, hi])``, ``("DISCRETE", [values])`` (Ordinal),
        ``("CATEGORICAL", [values])``; DeepHyper's ``(low, high)`` tuple (ints -> Int, else Float, an
        optional third item ``"log-uniform"``), and value lists: all numbers -> Ordinal ("discrete
        ordinal", sorted), anything else -> Categorical ("discrete non-ordinal"); a plain scalar -> Constant.
        ``starting_point`` (DeepHyper) maps names to defaults.
        """
        from tunekit._space_converters import params_from_dict

        return cls(params_from_dict(spec, starting_point))

    @classmethod
    def from_hpman(cls, manager: Any) -> "Space":
        """From an hpman ``HyperParameterManager``'s hinted declarations (see :mod:`tunekit.hpman`)."""
        from tunekit.hpman import space_from_hpman

        return space_from_hpman(manager)

    @classmethod
    def from_any(cls, obj: Any) -> "Space":
        """Space -> itself; ConfigurationSpace, hpman manager, list of parameters; a dict holding any Ray
        domain (or ``grid_search``) -> :meth:`from_tune`, any other dict -> :meth:`from_dict`."""
        from tunekit._space_converters import holds_tune_domain

        if isinstance(obj, Space):
            return obj
        module = type(obj).__module__ or ""
        if module.startswith("ConfigSpace"):
            return cls.from_configspace(obj)
        if module.startswith("hpman"):
            return cls.from_hpman(obj)
        if isinstance(obj, Mapping):
            return cls.from_tune(obj) if holds_tune_domain(obj) else cls.from_dict(obj)
        if isinstance(obj, (list, tuple)) and all(isinstance(p, PARAMETER_TYPES) for p in obj):
            return cls(obj)
        raise TypeError(f"cannot make a Space from {type(obj).__name__} {obj!r}; accepted: Space, "
                        "ConfigSpace.ConfigurationSpace, an hpman manager, a Ray Tune param_space dict, "
                        "a from_dict spec dict, or a list of parameter records")

    # --- converters out -------------------------------------------------------------------------

    def to_tune(self) -> dict:
        """Nested dict of Ray Tune domains (defaults are not carried; Ordinals become ``choice``)."""
        from tunekit._space_converters import param_to_tune

        return self.unflatten({p.name: param_to_tune(p) for p in self._params})

    def to_dict(self) -> dict:
        """JSON-able spec that :meth:`from_dict` reads back to an equal Space."""
        from tunekit._space_converters import param_to_spec

        return {p.name: param_to_spec(p) for p in self._params}

    # --- container protocol ---------------------------------------------------------------------

    @property
    def params(self) -> tuple[Parameter, ...]:
        return self._params

    @property
    def names(self) -> list[str]:
        return [p.name for p in self._params]

    def __getitem__(self, name: str) -> Parameter:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no parameter {name!r}; names are {self.names}") from None

    def __len__(self) -> int:
        return len(self._params)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Parameter]:
        return iter(self._params)

    def __repr__(self) -> str:
        return "Space([" + ", ".join(repr(p) for p in self._params) + "])"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Space):
            return NotImplemented
        return [type(p) for p in self._params] == [type(p) for p in other._params] and all(
            same_value(_fields(a), _fields(b)) for a, b in zip(self._params, other._params))

    __hash__ = None

    # --- encoding -------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Width of the encoding."""
        return self._slices[-1].stop if self._slices else 0

    @property
    def continuous_mask(self) -> np.ndarray:
        """(dim,) bool: True for the columns of Floats without step (free to move continuously)."""
        mask = np.zeros(self.dim, dtype=bool)
        for param, columns in zip(self._params, self._slices):
            mask[columns] = isinstance(param, Float) and param.step is None
        return mask

    @property
    def cardinality(self) -> int | None:
        """Number of distinct configurations; None when infinite (a Float without step)."""
        total = 1
        for param in self._params:
            if param.cardinality is None:
                return None
            total *= param.cardinality
        return total

    def encode(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Flat configs -> (n, dim) float64 array in [0, 1]; each config is validated first."""
        if isinstance(configs, Mapping):
            raise TypeError("encode takes a list of configs; wrap a single config as [config]")
        configs = list(configs)
        for config in configs:
            self.validate(config)
        X = np.zeros((len(configs), self.dim))
        for param, columns in zip(self._params, self._slices):
            if param.width:
                X[:, columns] = param.encode([config[param.name] for config in configs])
        return X

    def decode(self, X: np.ndarray) -> list[dict]:
        """(n, dim) array -> n flat configs: clipped to [0, 1], snapped to valid values, constants added."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ValueError(f"decode takes an array of shape (n, {self.dim}), got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("decode takes finite values; the array holds NaN or inf")
        X = np.clip(X, 0.0, 1.0)
        columns = [param.decode(X[:, cols]) for param, cols in zip(self._params, self._slices)]
        return [{p.name: values[i] for p, values in zip(self._params, columns)} for i in range(X.shape[0])]

    def project(self, X: np.ndarray) -> np.ndarray:
        """(n, dim) -> (n, dim): the nearest encodings of valid configs, ``encode(decode(X))``."""
        return self.encode(self.decode(X))

    # --- configs --------------------------------------------------------------------------------

    def sample(self, n: int, seed: int | np.random.Generator | None = None) -> list[dict]:
        """n random flat configs (log parameters log-uniform, ints uniform over the integers)."""
        rng = np.random.default_rng(seed)
        columns = [param.sample(rng, n) for param in self._params]
        return [{p.name: values[i] for p, values in zip(self._params, columns)} for i in range(n)]

    def default(self) -> dict:
        """Flat config of defaults where given, else the centre (snapped): linear or geometric midpoint,
        the first categorical value, the middle ordinal value."""
        config = self.decode(np.full((1, self.dim), 0.5))[0]
        for param in self._params:
            if param.default is not None:
                config[param.name] = param.default
        return config

    def validate(self, config: Mapping[str, Any]) -> None:
        """ValueError naming the first missing, unknown or invalid key. Constants may be left out."""
        if not isinstance(config, Mapping):
            raise TypeError(f"a config must be a flat dict keyed by {self.names}, got {config!r}")
        for key in config:
            if key not in self._by_name:
                raise ValueError(f"config key {key!r} is not a parameter of this space; names are {self.names}")
        for param in self._params:
            if param.name in config:
                param.check(config[param.name])
            elif not isinstance(param, Constant):
                raise ValueError(f"config misses parameter {param.name!r}")

    def flatten(self, nested_config: Mapping[str, Any]) -> dict:
        """Nested config (as Ray passes it) -> flat dict keyed by path names; a dict that is the value of
        a parameter (a categorical of dicts) is kept whole."""
        flat: dict[str, Any] = {}
        groups = {name.rsplit("/", i)[0] for name in self._by_name for i in range(1, name.count("/") + 1)}

        def walk(node: Mapping[str, Any], prefix: str) -> None:
            for key, value in node.items():
                path = f"{prefix}{key}"
                if path not in self._by_name and path in groups and isinstance(value, Mapping):
                    walk(value, path + "/")
                else:
                    flat[path] = value

        walk(nested_config, "")
        return flat

    def unflatten(self, flat_config: Mapping[str, Any]) -> dict:
        """Flat dict keyed by path names -> nested dict (as Ray's ``param_space`` and configs are)."""
        nested: dict[str, Any] = {}
        for name, value in flat_config.items():
            node = nested
            *groups, leaf = name.split("/")
            for group in groups:
                node = node.setdefault(group, {})
            node[leaf] = value
        return nested


def _fields(param: Parameter) -> dict:
    return {k: v for k, v in vars(param).items() if not k.startswith("_")}
