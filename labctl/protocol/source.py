"""Safe YAML reading that keeps the line and column of every node.

PyYAML's composer (with the SafeLoader's resolver) builds a node graph; we never run a
constructor, so no tag can become an object, and scalars keep their raw text: each field is
read by its own rules (``10:00`` stays a time of day, not YAML 1.1's sexagesimal 600).

Hostile input is refused with one located message, never a traceback: files over
``MAX_BYTES``, binary data, undecodable text, nesting deeper than ``MAX_DEPTH``, alias
expansion beyond ``MAX_NODES`` (a "billion laughs" bomb), unknown tags, duplicate keys.
"""

from __future__ import annotations

import codecs
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from labctl.errors import Diagnostic, InputFileError

# labctl's limits on a protocol file (docs/protocols.md, "Limits"); each message that
# enforces one states it. They are far above any real protocol (a few kB, a few thousand
# values, nesting under 10 levels) and stop hostile or broken files early.
MAX_BYTES = 2 * 1024 * 1024  # a protocol is a few kB; 2 MB leaves room for huge comments
MAX_DEPTH = 64
MAX_NODES = 200_000
MAX_ALIAS_COPIES = 20_000  # values copied so that each alias use has its own position

_STD_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:timestamp",
    "tag:yaml.org,2002:merge",
}


@dataclass(frozen=True)
class Mark:
    """A 1-based position in the source file.

    A value reached through an alias (``*name``) is marked where the alias is (its use), and
    ``via`` says in words where its text is written (the anchor's line), for messages.
    """

    line: int
    col: int
    via: str | None = field(default=None, compare=False)


@dataclass(eq=False)
class Node:
    mark: Mark


@dataclass(eq=False)
class Scalar(Node):
    """A scalar with its raw text and the tag YAML's resolver gave it (int, float, str...)."""

    text: str
    tag: str
    quoted: bool

    @property
    def kind(self) -> str:
        return self.tag.rsplit(":", 1)[-1]

    @property
    def is_null(self) -> bool:
        return self.kind == "null"


@dataclass(eq=False)
class Seq(Node):
    items: list[Node] = field(default_factory=list)


@dataclass(eq=False)
class Map(Node):
    """A mapping; keys are scalars (text), kept in file order."""

    entries: list[tuple[Scalar, Node]] = field(default_factory=list)

    def get(self, key: str) -> Node | None:
        for k, v in self.entries:
            if k.text == key:
                return v
        return None

    def key_node(self, key: str) -> Scalar | None:
        for k, _ in self.entries:
            if k.text == key:
                return k
        return None

    def keys(self) -> list[str]:
        return [k.text for k, _ in self.entries]


def describe(node: Node) -> str:
    """What a node is, in words for messages ("a list", "text 'abc'")."""
    if isinstance(node, Map):
        return "a mapping"
    if isinstance(node, Seq):
        return "a list"
    assert isinstance(node, Scalar)
    if node.is_null:
        return "nothing (null)"
    t = node.text if len(node.text) <= 40 else node.text[:37] + "..."
    return {"int": "the number", "float": "the number", "bool": "the boolean"}.get(
        node.kind, "the text"
    ) + f" '{t}'"


_ESCAPES: dict[str, str | int | None] = {
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\x85": "\\x85",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_ESCAPE_TABLE = str.maketrans(_ESCAPES)


def one_line(msg: str) -> str:
    """``msg`` with line breaks escaped: a diagnostic is one FILE:LINE:COL line, even when it
    quotes a key or value that holds a newline."""
    return msg.translate(_ESCAPE_TABLE)


class _AliasUse(yaml.Node):
    """One use of an alias (``*name``): the anchored node and where the alias is written.

    PyYAML's composer hands back the anchored node itself for every alias, so the use's
    position would be lost; the loader wraps it in this to keep it."""

    def __init__(self, target: yaml.Node, anchor: str, mark: yaml.Mark) -> None:
        super().__init__(target.tag, target.value, mark, mark)
        self.target = target
        self.anchor = anchor


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.count = 0
        self.copied = 0  # nodes copied to mark alias uses (at most MAX_ALIAS_COPIES)
        self.diags: list[Diagnostic] = []
        self._memo: dict[int, Node] = {}

    def _use(self, n: _AliasUse, depth: int) -> Node:
        """The anchored value, marked where the alias is used (see :class:`Mark`)."""
        target = self.build(n.target, depth)
        use = _mark(n)
        at = f"the anchor &{n.anchor} at line {target.mark.line}"
        return self._copy(target, use, at, top=True)

    def _copy(self, node: Node, use: Mark, anchor: str, *, top: bool = False) -> Node:
        """``node`` (and what it holds) marked at ``use``. The used value itself is always
        marked; past MAX_ALIAS_COPIES copies (an alias bomb) what it holds stays shared, and
        messages about those inner values point at the anchor instead."""
        if not top and self.copied >= MAX_ALIAS_COPIES:
            return node
        self.copied += 1
        via = (
            f"the value comes from {anchor}"
            if top
            else f"written at line {node.mark.line}, in {anchor}"
        )
        mark = Mark(use.line, use.col, via)
        if isinstance(node, Scalar):
            return Scalar(mark, node.text, node.tag, node.quoted)
        if isinstance(node, Seq):
            return Seq(mark, [self._copy(i, use, anchor) for i in node.items])
        assert isinstance(node, Map)
        entries = [
            (self._copy(k, use, anchor), self._copy(v, use, anchor)) for k, v in node.entries
        ]
        return Map(mark, [(k, v) for k, v in entries if isinstance(k, Scalar)])

    def error(self, mark: Mark, msg: str) -> None:
        self.diags.append(Diagnostic(self.file, mark.line, mark.col, "error", one_line(msg)))

    def build(self, n: yaml.Node, depth: int = 0) -> Node:
        if isinstance(n, _AliasUse):
            return self._use(n, depth)
        memo = self._memo.get(id(n))
        if memo is not None:
            return memo  # an alias: share the node, do not expand it again
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig(_mark(n), _too_many())
        if depth > MAX_DEPTH:
            raise _TooBig(_mark(n), _too_deep())
        if n.tag not in _STD_TAGS:
            self.error(_mark(n), f"tag '{n.tag}' is not allowed (protocols are plain data)")
        if isinstance(n, yaml.ScalarNode):
            out: Node = Scalar(_mark(n), n.value, n.tag, n.style not in (None, ""))
            self._memo[id(n)] = out
            return out
        if isinstance(n, yaml.SequenceNode):
            seq = Seq(_mark(n))
            self._memo[id(n)] = seq
            seq.items = [self.build(c, depth + 1) for c in n.value]
            return seq
        assert isinstance(n, yaml.MappingNode)
        m = Map(_mark(n))
        self._memo[id(n)] = m
        seen: dict[str, Mark] = {}
        merged: list[tuple[Scalar, Node]] = []
        for kn, vn in n.value:
            if isinstance(kn, _AliasUse):
                kn = kn.target  # an aliased key: its text is what counts
            if kn.tag == "tag:yaml.org,2002:merge":
                merged.extend(self._merge_entries(vn, depth))
                continue
            if not isinstance(kn, yaml.ScalarNode):
                self.error(_mark(kn), "a key must be plain text, not a list or mapping")
                continue
            key = Scalar(_mark(kn), kn.value, kn.tag, kn.style not in (None, ""))
            if key.text in seen:
                first = seen[key.text]
                self.error(key.mark, f"duplicate key '{key.text}' (first at line {first.line})")
                continue
            seen[key.text] = key.mark
            m.entries.append((key, self.build(vn, depth + 1)))
        # Explicit keys win over merged ones (YAML merge-key semantics).
        for key, val in merged:
            if key.text not in seen:
                seen[key.text] = key.mark
                m.entries.append((key, val))
        return m

    def _merge_entries(self, vn: yaml.Node, depth: int) -> list[tuple[Scalar, Node]]:
        sources = vn.value if isinstance(vn, yaml.SequenceNode) else [vn]
        out: list[tuple[Scalar, Node]] = []
        for s in sources:
            built = self.build(s, depth + 1)
            if not isinstance(built, Map):
                self.error(built.mark, "'<<' merges only mappings")
                continue
            out.extend(built.entries)
        return out


class _TooBig(Exception):
    def __init__(self, mark: Mark, msg: str) -> None:
        super().__init__(msg)
        self.mark = mark
        self.msg = msg


class _LimitedLoader(yaml.SafeLoader):
    """PyYAML's safe composer with the node and depth limits checked while composing: a
    2 MB file of ``[1, 1, 1, ...]`` is refused after MAX_NODES events, not after building
    a million nodes, and deep nesting stops before Python's recursion limit."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            ev = self.peek_event()
            target = super().compose_node(parent, index)  # type: ignore[arg-type]
            assert target is not None
            return _AliasUse(target, str(ev.anchor), ev.start_mark)
        self._nodes += 1
        self._depth += 1
        try:
            if self._nodes > MAX_NODES or self._depth > MAX_DEPTH + 1:
                m = self.peek_event().start_mark
                where = Mark(m.line + 1, m.column + 1)
                if self._nodes > MAX_NODES:
                    raise _TooBig(where, _too_many())
                raise _TooBig(where, _too_deep())
            return super().compose_node(parent, index)  # type: ignore[arg-type]
        finally:
            self._depth -= 1


def _too_deep() -> str:
    return (
        f"nesting deeper than {MAX_DEPTH} levels, labctl's limit for a protocol file "
        "(a protocol needs fewer than 10)"
    )


def _too_many() -> str:
    return (
        f"document has more than {MAX_NODES} values, labctl's limit for a protocol file "
        "(a protocol has a few thousand)"
    )


def _mark(n: yaml.Node) -> Mark:
    return Mark(n.start_mark.line + 1, n.start_mark.column + 1)


def read_text(path: str | Path) -> str:
    """Read a protocol file as text. Raises InputFileError for files that can't be read."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
            size = max(len(data), os.fstat(fh.fileno()).st_size)
    except FileNotFoundError:
        raise InputFileError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{p}: is a directory, not a protocol file") from None
    except PermissionError:
        raise InputFileError(f"{p}: permission denied") from None
    except OSError as exc:
        raise InputFileError(f"{p}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_BYTES:
        raise InputFileError(
            f"{p}: the file is {_size(size)}, above labctl's limit of "
            f"{_size(MAX_BYTES)} for a protocol file; a protocol is a few kB of YAML: keep "
            "long texts, images and data tables in files of their own"
        )
    return decode(data, str(p))


def _size(n: int) -> str:
    """Bytes as people say them: '2 MB', '5.3 MB', '900 kB' (1 MB = 1024 kB)."""
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.3g} MB"
    return f"{n / 1024:.3g} kB"


def decode(data: bytes, name: str) -> str:
    """Decode file bytes as UTF-8 (or UTF-16/32 with a byte-order mark)."""
    for bom, enc in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            try:
                return data.decode(enc)
            except UnicodeDecodeError:
                raise InputFileError(f"{name}: not valid {enc.upper()} text") from None
    if b"\x00" in data:
        raise InputFileError(f"{name}: binary data, not a YAML text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputFileError(
            f"{name}:{line}:{col}: error: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
            "save the file as UTF-8"
        ) from None


_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")  # line breaks as PyYAML counts them


def position(text: str, index: int) -> tuple[int, int]:
    """1-based (line, column) of character ``index`` of ``text``, counted as YAML marks are."""
    line, start = 1, 0
    for m in _BREAKS.finditer(text, 0, max(0, index)):
        line, start = line + 1, m.end()
    return line, index - start + 1


def parse(text: str, file: str) -> tuple[Node | None, list[Diagnostic]]:
    """Parse YAML text into located nodes. Returns (root or None, diagnostics)."""
    try:
        root = yaml.compose(text, Loader=_LimitedLoader)
    except _TooBig as exc:
        return None, [Diagnostic(file, exc.mark.line, exc.mark.col, "error", exc.msg)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        if "expected a single document" in (exc.context or "") or "but found another document" in (
            exc.problem or ""
        ):
            problem = "a protocol file holds one YAML document; found a second one ('---')"
        elif "'\\t'" in problem:
            problem += " (indent with spaces; YAML does not allow tabs here)"
        elif (
            exc.problem
            and exc.context_mark
            and exc.problem_mark
            and ("flow" in (exc.context or "") or "quoted" in (exc.context or ""))
        ):
            # Say where the unclosed bracket or quote began: often lines above the problem.
            cm = exc.context_mark
            if (cm.line, cm.column) != (exc.problem_mark.line, exc.problem_mark.column):
                what = (
                    str(exc.context).removeprefix("while parsing ").removeprefix("while scanning ")
                )
                what = "the " + what.removeprefix("a ").removeprefix("an ")
                problem += f" (in {what} that starts at line {cm.line + 1}, column {cm.column + 1})"
        return None, [Diagnostic(file, line, col, "error", f"YAML syntax: {problem}")]
    except yaml.reader.ReaderError as exc:
        # Its text is two lines with a character offset; give the line:column instead.
        line, col = position(text, exc.position)
        code = exc.character if isinstance(exc.character, int) else 0
        kind = "a control character" if code < 0x20 or 0x7F <= code <= 0x9F else "not printable"
        return None, [
            Diagnostic(
                file,
                line,
                col,
                "error",
                f"character U+{code:04X} is not allowed in a protocol file ({kind}); remove it",
            )
        ]
    except yaml.YAMLError as exc:
        return None, [Diagnostic(file, 1, 1, "error", "YAML syntax: " + " ".join(str(exc).split()))]
    except RecursionError:
        return None, [Diagnostic(file, 1, 1, "error", _too_deep())]
    if root is None:
        return None, [Diagnostic(file, 1, 1, "error", "the file is empty")]
    b = _Builder(file)
    try:
        node = b.build(root)
    except _TooBig as exc:
        return None, [Diagnostic(file, exc.mark.line, exc.mark.col, "error", exc.msg)]
    except RecursionError:
        return None, [Diagnostic(file, 1, 1, "error", _too_deep())]
    return node, b.diags
