"""When two recorded numbers agree: the one tolerance of the rank comparison and the diff,
in Python, in SQL, and in the words the output states it with.

``|a - b| <= atol + rtol * max(|a|, |b|)``; NaN (NULL in the record) agrees only with NaN.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    rtol: float = 1e-6
    atol: float = 0.0

    def close(self, a: float | None, b: float | None) -> bool:
        if a is None or b is None:
            return a is b
        return abs(a - b) <= self.atol + self.rtol * max(abs(a), abs(b))

    def apart_sql(self, a: str, b: str) -> str:
        """SQL that is true where the columns ``a`` and ``b`` are apart beyond it (NULL
        against a number is apart; NULL against NULL is not)."""
        return (f"(({a} IS NULL) != ({b} IS NULL) OR "
                f"abs({a} - {b}) > {self.atol!r} + {self.rtol!r} * max(abs({a}), abs({b})))")

    def __str__(self) -> str:
        offset = f"{self.atol:g} + " if self.atol else ""
        return f"|a - b| <= {offset}{self.rtol:g} * max(|a|, |b|)"
