"""Random-looking, unique Stripe-style identifiers."""

from __future__ import annotations

import random
import string

_ALPHABET = string.ascii_letters + string.digits
# byte -> alphabet character (a slight bias is irrelevant here); fast via bytes.translate
_TABLE = bytes((_ALPHABET[b % len(_ALPHABET)]).encode()[0] for b in range(256))


class SeededRandom(random.Random):
    """Reproducible randomness for ids and chaos decisions (a simulation, not cryptography)."""


class IdFactory:
    """Makes ids like ``sub_1Pgc6rB7WZ01zgkWNy0Cn5nw``; never the same one twice."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._seen: set[str] = set()

    def new(self, prefix: str, length: int = 24) -> str:
        while True:
            body = "1" + self._rng.randbytes(length - 1).translate(_TABLE).decode()
            ident = f"{prefix}_{body}"
            if ident not in self._seen:
                self._seen.add(ident)
                return ident
