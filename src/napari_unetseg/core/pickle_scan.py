"""What a pickle would import, found by reading its opcodes without running any of them.

``torch.load(weights_only=True)`` already refuses unknown globals; this scan runs first, so
that a refusal names everything a file would import and a damaged file is told apart from a
hostile one.
"""

from __future__ import annotations

import pickle
import pickletools
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

#: Globals a plain tensor pickle may name besides ``torch.*`` (torch's own weights-only list).
SAFE_GLOBALS = frozenset(
    {
        "_codecs.encode",
        "builtins.bytearray",
        "builtins.complex",
        "builtins.set",
        "builtins.frozenset",
        "collections.Counter",
        "collections.OrderedDict",
    }
)


@dataclass
class PickleScan:
    """What a pickle stream would import, found without running it."""

    globals: list[str] = field(default_factory=list)
    complete: bool = False

    @property
    def unsafe(self) -> list[str]:
        names = [re.sub(r"^__builtin__\.", "builtins.", g) for g in self.globals]
        return [g for g in names if not (g.startswith("torch.") or g in SAFE_GLOBALS)]


_STRING_OPS = frozenset(
    {
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
        "UNICODE",
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
    }
)


class _Mark:
    """The MARK opcode's entry on the simulated stack."""


_MARK = _Mark()
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


def scan_pickle(stream: IO[bytes], pickles: int = 1) -> PickleScan:
    """List the globals that up to ``pickles`` consecutive pickles in ``stream`` would import.

    Only opcodes are read (:func:`pickletools.genops`); nothing is constructed or imported.
    The unpickler's stack is simulated from each opcode's documented effect, so the module
    and name a ``STACK_GLOBAL`` takes are the ones really on the stack, however many decoy
    strings were pushed and popped before; a name that is not a plain string there is
    reported as ``"<computed>"``, which counts as unsafe. ``complete`` is False when the
    stream ends or breaks before the expected pickles did.
    """
    scan = PickleScan()
    try:
        for _ in range(pickles):
            stack: list[Any] = []
            memo: dict[Any, Any] = {}
            for opcode, arg, _pos in pickletools.genops(stream):
                name = opcode.name
                if name in ("GLOBAL", "INST"):
                    scan.globals.append(str(arg).replace(" ", "."))
                if name in ("MEMOIZE", *_PUT_OPS):
                    memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1] if stack else None
                    continue
                before = opcode.stack_before
                if pickletools.markobject in before:
                    while stack and stack[-1] is not _MARK:
                        stack.pop()
                    if stack:
                        stack.pop()
                    count = before.index(pickletools.markobject)
                else:
                    count = len(before)
                popped = [stack.pop() if stack else None for _ in range(count)][::-1]
                if name == "STACK_GLOBAL":
                    module, qualname = popped if len(popped) == 2 else (None, None)
                    if isinstance(module, str) and isinstance(qualname, str):
                        scan.globals.append(f"{module}.{qualname}")
                    else:
                        scan.globals.append("<computed>")
                pushed: list[Any] = [None] * len(opcode.stack_after)
                if name in _STRING_OPS:
                    pushed = [arg.decode("latin-1") if isinstance(arg, bytes) else arg]
                elif name in _GET_OPS:
                    pushed = [memo.get(arg)]
                elif name == "MARK":
                    pushed = [_MARK]
                elif name == "DUP":
                    pushed = [popped[0] if popped else None] * 2
                stack.extend(pushed)
    except (ValueError, EOFError, pickle.UnpicklingError, IndexError, OSError):
        return scan
    scan.complete = True
    return scan


def _pickle_members(archive: zipfile.ZipFile) -> list[str]:
    return [n for n in archive.namelist() if n.endswith(".pkl")]


def scan_file(path: Path, is_zip: bool) -> PickleScan:
    """Scan every pickle a ``torch.load`` of ``path`` would read."""
    if is_zip:
        total = PickleScan(complete=True)
        try:
            with zipfile.ZipFile(path) as archive:
                for member in _pickle_members(archive):
                    with archive.open(member) as stream:
                        part = scan_pickle(stream)
                    total.globals += part.globals
                    total.complete &= part.complete
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            total.complete = False
        return total
    with open(path, "rb") as stream:
        # torch.save's legacy format is several pickles in a row (magic number, protocol,
        # system info, the object, storage keys) followed by raw tensor bytes.
        return scan_pickle(stream, pickles=5)
