"""Operator algebra of phase retrieval, in the spirit of PyNX.

Every operator acts on a :class:`~crystalscope.cdi.state.CDIState` in place and returns
it.  Operators compose like matrices, the right-most acting first::

    state = (Sup * ER**5 * HIO**40)**20 * ER**50 * state

* ``Op * state`` applies ``Op``;
* ``Op1 * Op2`` is the operator "``Op2`` then ``Op1``";
* ``Op ** n`` repeats ``Op`` ``n`` times;
* ``Op(key=value)`` is a copy of a primitive operator with other parameters.

The string form used in configuration files lists the steps in *execution* order,
separated by commas, with the same ``*`` and ``**`` inside one step:
``"ER**50,(Sup*ER**5*HIO**50)**10"`` means 50 ER, then 10 times (50 HIO, 5 ER, one
support update).  Parameters may be given in parentheses: ``"HIO(beta=0.8)**20"``.
:func:`parse_algorithm` turns such a string into the same operator as the algebra, and
``repr`` of any operator is a canonical expression that parses back to it.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from crystalscope.errors import ConfigError

if TYPE_CHECKING:
    from crystalscope.cdi.state import CDIState

__all__ = ["REGISTRY", "Chain", "Operator", "Repeat", "parse_algorithm"]

#: Primitive operators by their name in algorithm strings (filled by operators.py).
REGISTRY: dict[str, Operator] = {}


class Operator:
    """Base of all operators; subclasses implement :meth:`apply`."""

    name = "Op"

    def apply(self, state: CDIState) -> CDIState:
        """Act on ``state`` (in place) and return it."""
        raise NotImplementedError

    def steps(self) -> list[Operator]:
        """The primitive operators in execution order (repetitions expanded)."""
        return [self]

    def __mul__(self, other: Any) -> Any:
        from crystalscope.cdi.state import CDIState

        if isinstance(other, Operator):
            return Chain((self, other))
        if isinstance(other, CDIState):
            return self.apply(other)
        return NotImplemented

    def __pow__(self, n: int) -> Operator:
        if not isinstance(n, int) or n < 0:
            raise ConfigError(f"an operator power must be an integer >= 0, got {n!r}")
        return Repeat(self, n)

    def __call__(self, **params: Any) -> Operator:
        if not dataclasses.is_dataclass(self):
            raise ConfigError(f"{self!r} takes no parameters")
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise ConfigError(
                f"{self.name} has no parameter {unknown[0]!r}; known: {sorted(names)}",
                field=self.name,
            )
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for key, value in params.items():
            want = type(defaults[key])
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                params[key] = float(value)
            elif not isinstance(params[key], want):
                raise ConfigError(
                    f"{self.name}: {key} must be {want.__name__}, got {value!r}", field=self.name
                )
        return dataclasses.replace(self, **params)  # type: ignore[type-var]

    def __repr__(self) -> str:
        if not dataclasses.is_dataclass(self):
            return self.name
        changed = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != f.default
        ]
        return f"{self.name}({','.join(changed)})" if changed else self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Operator) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


class Chain(Operator):
    """Product of operators, written left to right, applied right to left."""

    name = "Chain"
    ops: tuple[Operator, ...]

    def __init__(self, ops: tuple[Operator, ...]) -> None:
        flat: list[Operator] = []
        for op in ops:
            flat.extend(op.ops if isinstance(op, Chain) else (op,))
        self.ops = tuple(flat)

    def apply(self, state: CDIState) -> CDIState:
        for op in reversed(self.ops):
            state = op.apply(state)
        return state

    def steps(self) -> list[Operator]:
        out: list[Operator] = []
        for op in reversed(self.ops):
            out.extend(op.steps())
        return out

    def __repr__(self) -> str:
        return "*".join(f"({op!r})" if isinstance(op, Chain) else repr(op) for op in self.ops)


class Repeat(Operator):
    """An operator applied ``n`` times."""

    name = "Repeat"

    def __init__(self, op: Operator, n: int) -> None:
        self.op = op
        self.n = n

    def apply(self, state: CDIState) -> CDIState:
        for _ in range(self.n):
            state = self.op.apply(state)
        return state

    def steps(self) -> list[Operator]:
        return self.op.steps() * self.n

    def __repr__(self) -> str:
        inner = repr(self.op)
        if isinstance(self.op, Chain | Repeat):
            inner = f"({inner})"
        return f"{inner}**{self.n}"


_TOKEN = re.compile(r"\s*(\*\*|\*|\(|\)|,|=|[A-Za-z_][A-Za-z_0-9]*|[-+]?[0-9.]+(?:e[-+]?\d+)?)")


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ConfigError(f"cannot parse algorithm at {text[pos:]!r}", field="algorithm")
        tokens.append(m.group(1))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        from crystalscope.cdi import operators  # noqa: F401  (fills REGISTRY)

        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            want = f"{expected!r}" if expected else "more"
            raise ConfigError(f"algorithm string: expected {want}, got {tok!r}", field="algorithm")
        self.pos += 1
        return tok

    def sequence(self) -> Operator:
        parts = [self.product()]
        while self.peek() == ",":
            self.take(",")
            parts.append(self.product())
        if self.peek() is not None:
            raise ConfigError(f"algorithm string: unexpected {self.peek()!r}", field="algorithm")
        return parts[0] if len(parts) == 1 else Chain(tuple(reversed(parts)))

    def product(self) -> Operator:
        ops = [self.power()]
        while self.peek() == "*":
            self.take("*")
            ops.append(self.power())
        return ops[0] if len(ops) == 1 else Chain(tuple(ops))

    def power(self) -> Operator:
        op = self.atom()
        while self.peek() == "**":
            self.take("**")
            tok = self.take()
            if not tok.isdigit():
                raise ConfigError(f"power must be an integer, got {tok!r}", field="algorithm")
            op = op ** int(tok)
        return op

    def atom(self) -> Operator:
        tok = self.take()
        if tok == "(":
            inner = self.product()
            self.take(")")
            return inner
        if tok not in REGISTRY:
            raise ConfigError(
                f"unknown operator {tok!r}; known: {', '.join(sorted(REGISTRY))}",
                field="algorithm",
            )
        op = REGISTRY[tok]
        if self.peek() == "(":
            op = op(**self.params())
        return op

    def params(self) -> dict[str, Any]:
        self.take("(")
        out: dict[str, Any] = {}
        while self.peek() != ")":
            key = self.take()
            self.take("=")
            value = self.take()
            out[key] = _literal(value)
            if self.peek() == ",":
                self.take(",")
        self.take(")")
        return out


def _literal(text: str) -> Any:
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"bad parameter value {text!r}", field="algorithm") from None


def parse_algorithm(text: str) -> Operator:
    """Parse an algorithm string such as ``"ER**50,(Sup*ER**5*HIO**50)**10"``.

    Parameters
    ----------
    text : str
        Comma-separated steps in execution order; each step an operator product.

    Returns
    -------
    Operator
        The equivalent operator (``parse_algorithm(s) * state`` runs it).

    Raises
    ------
    ConfigError
        Unknown operator, bad syntax or bad parameter (field ``algorithm``).
    """
    if not text.strip():
        raise ConfigError("empty algorithm string", field="algorithm")
    return _Parser(text).sequence()
