"""Griffe extension for the API reference: fence the doctest examples of docstrings as ``pycon``.

The docstrings carry their examples as bare ``>>>`` blocks (they run as doctests); Markdown would
read ``>>>`` as nested block quotes and ``[a][b]`` as links. A block starts at a ``>>>`` line and
ends at the first blank line, as in doctest.
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    """Wrap every doctest block of ``text`` in a ```pycon fence, keeping its indentation.

    >>> print(fence_doctests("Example:\\n\\n>>> 1 + 1\\n2\\n\\nEnd."))
    Example:
    <BLANKLINE>
    ```pycon
    >>> 1 + 1
    2
    ```
    <BLANKLINE>
    End.
    """
    out: list[str] = []
    inside, fenced_code = False, False
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("```"):
            fenced_code = not fenced_code
        if not inside and not fenced_code and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            inside = True
        elif inside and not stripped:
            out.append(f"{indent}```")
            inside = False
        out.append(line)
    if inside:
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Fence doctest blocks in every docstring griffe loads."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_doctests(obj.docstring.value)
