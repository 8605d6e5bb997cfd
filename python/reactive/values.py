"""``Int64``: the Python type of an int64 that the database stored or a client sent.

Convex has two number types, float64 (a JS ``number``) and int64 (a JS ``bigint``); Python
has ``int`` and ``float``. Python code computes ints all the time (``len(messages)``), and a
JS client that got ``count: 2n`` for them would break on ``count + 1``. So the wire tells the
two kinds of ``int`` apart (the guide's "Numbers" page has the whole table):

* an ``Int64`` (an int64 read from a document, an int64 argument from a client, or a value
  that a ``v.int64()`` validator checked, ``args`` and ``returns`` included) reaches clients
  as an int64 (``bigint`` in JS, ``ConvexInt64``-decoded int in the Python client);
* any other ``int`` in a function's result or a ``ConvexError``'s data reaches clients as a
  float64 ``number`` when it is exact as one (``|n| <= 2**53``), and as an int64 otherwise;
* documents store every ``int`` as int64, whatever its Python type.

``Int64`` is a subclass of ``int`` with ``int``'s ``repr``, so it behaves as an ``int``
everywhere (arithmetic on it gives plain ``int``: a computed value).
"""

from __future__ import annotations

__all__ = ["Int64"]


class Int64(int):
    """An ``int`` that is an int64 on the wire (see the module docstring)."""

    __slots__ = ()

    __repr__ = int.__repr__
    __str__ = int.__repr__
