"""Read and edit the Luna client configuration file without losing anything we do not touch.

Two dialects, chosen by the first section header in the file:

    Chrystoki.conf (Linux/Unix)        crystoki.ini (Windows)
    Luna = {                           [Luna]
       DefaultTimeOut = 500000;        DefaultTimeOut=500000
    }

Section names may contain spaces (``LunaSA Client``, ``Secure Trusted Channel``); values are
taken verbatim after the first ``=`` (paths with spaces, ``a,b`` member lists, empty values such
as ``ServerHtl00 = ;``), minus surrounding whitespace and one trailing ``;``. Blank lines and
lines starting with ``#`` or ``;`` are comments. The file is kept as its list of lines: an edit
rewrites, inserts or deletes whole lines and every other line stays byte-identical.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass, field

CONF = "conf"
INI = "ini"
FILE_MODE = 0o600  # the file names client key files and HA members: owner only
_COMMENT_PREFIXES = ("#", ";")
# indent, separator and terminator for a new entry when the file has no entry to copy them from;
# Luna's own Chrystoki.conf indents entries by three spaces
_DEFAULT_STYLE = {CONF: ("   ", " = ", ";"), INI: ("", "=", "")}

_CONF_HEADER = re.compile(r"^\s*(?P<name>[^={}\[\]]*?)\s*=\s*\{\s*$")
_INI_HEADER = re.compile(r"^\s*\[(?P<name>[^\]]*)\]\s*$")
_ENTRY = re.compile(r"^(?P<indent>\s*)(?P<key>[^=]*?)(?P<eq>\s*=\s*)(?P<value>.*?)(?P<tail>\s*;?\s*)$")


class ChrystokiSyntaxError(ValueError):
    """The text is not in Chrystoki.conf / crystoki.ini syntax; the message starts with source:line."""


@dataclass
class _Entry:
    key: str
    value: str
    line: int  # 0-based index into the line list
    indent: str
    eq: str
    tail: str


@dataclass
class _Section:
    name: str
    header: int
    last: int  # conf: the closing '}' line; ini: the last entry line (or the header)
    entries: dict[str, _Entry] = field(default_factory=dict)

    def find(self, key: str) -> _Entry | None:
        # Luna writes mixed-case keys (reconnAtt, HAOnly) and users retype them as `reconnatt`.
        # Luna's own matching rule is not documented, so an exact match wins and otherwise the
        # first case-insensitive match is used; set/remove follow the same rule, so an edit
        # updates the spelling already in the file instead of adding a second one.
        if key in self.entries:
            return self.entries[key]
        folded = key.casefold()
        return next((e for k, e in self.entries.items() if k.casefold() == folded), None)

    def insert_at(self) -> int:
        """Index for a new entry: after the last entry, else right after the header."""
        lines = [e.line for e in self.entries.values()]
        return max(lines, default=self.header) + 1


class ChrystokiConf:
    """A Chrystoki.conf or crystoki.ini held as its lines, with ordered read and in-place edit."""

    def __init__(self, lines: list[str], source: str) -> None:
        self._lines = lines
        self._source = source
        self._newline = next((raw[len(_body(raw)) :] for raw in lines if _body(raw) != raw), "\n")
        self._dialect = CONF
        self._sections: list[_Section] = []
        self._index()

    @classmethod
    def parse(cls, text: str, source: str = "<string>") -> ChrystokiConf:
        return cls(text.splitlines(keepends=True), source)

    @classmethod
    def load(cls, path) -> ChrystokiConf:
        # newline="" keeps CRLF as written; surrogateescape round-trips any byte unchanged
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            return cls.parse(f.read(), source=os.fspath(path))

    @property
    def dialect(self) -> str:
        return self._dialect

    # -- reading -------------------------------------------------------------------------------

    def sections(self) -> list[str]:
        return [s.name for s in self._sections]

    def section(self, name: str) -> dict[str, str]:
        found = self._find_section(name)
        return {k: e.value for k, e in found.entries.items()} if found else {}

    def get(self, section: str, key: str, default: str | None = None) -> str | None:
        found = self._find_section(section)
        entry = found.find(key) if found else None
        return entry.value if entry else default

    # -- editing -------------------------------------------------------------------------------

    def set(self, section: str, key: str, value: str) -> None:
        """Set a value, keeping the position of an existing key; a missing section is appended."""
        for what, text in (("section", section), ("key", key), ("value", value)):
            if "\n" in text or "\r" in text:
                raise ValueError(f"{what} {text!r}: a line break cannot be written to {self._source}")
        before = list(self._lines)
        try:
            found = self._find_section(section)
            entry = found.find(key) if found else None
            if entry:
                nl = self._lines[entry.line][len(_body(self._lines[entry.line])) :]
                self._lines[entry.line] = f"{entry.indent}{entry.key}{entry.eq}{value}{entry.tail}{nl}"
            elif found:
                indent, eq, tail = self._style(found)
                self._insert(found.insert_at(), [f"{indent}{key}{eq}{value}{tail}"])
            else:
                indent, eq, tail = self._style(None)
                header = f"{section} = {{" if self._dialect == CONF else f"[{section}]"
                closing = ["}"] if self._dialect == CONF else []
                self._insert(len(self._lines), [header, f"{indent}{key}{eq}{value}{tail}", *closing])
            self._index()
            if self.get(section, key) != value:
                raise ValueError(
                    "it would read back differently (surrounding spaces and a "
                    "trailing ';' are not part of a value)"
                )
        except ValueError as err:  # includes ChrystokiSyntaxError: undo, the file stays valid
            self._lines = before
            self._index()
            raise ValueError(f"cannot write {section!r} {key!r} = {value!r}: {err}") from err

    def remove(self, section: str, key: str) -> None:
        """Delete the key's line; a key or section that is absent is left absent."""
        found = self._find_section(section)
        entry = found.find(key) if found else None
        if entry:
            del self._lines[entry.line]
            self._index()

    def remove_section(self, name: str) -> None:
        """Delete the section from its header to its closing '}' (ini: to its last entry)."""
        found = self._find_section(name)
        if found:
            del self._lines[found.header : found.last + 1]
            self._index()

    # -- writing -------------------------------------------------------------------------------

    def dumps(self) -> str:
        return "".join(self._lines)

    def save(self, path) -> None:
        """Write atomically: a temporary file in the same directory, mode 0600, then os.replace."""
        path = os.fspath(path)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=os.path.dirname(os.path.abspath(path))
        )
        try:
            os.fchmod(fd, FILE_MODE)
            with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as f:
                f.write(self.dumps())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    # -- internals -----------------------------------------------------------------------------

    def _find_section(self, name: str) -> _Section | None:
        folded = name.casefold()  # names keep their case; lookup ignores it, like keys
        return next((s for s in self._sections if s.name.casefold() == folded), None)

    def _style(self, section: _Section | None) -> tuple[str, str, str]:
        """Indent, separator and terminator of the nearest existing entry, so additions blend in."""
        pool = (
            list(section.entries.values())
            if section and section.entries
            else [e for s in self._sections for e in s.entries.values()]
        )
        if not pool:
            return _DEFAULT_STYLE[self._dialect]
        last = max(pool, key=lambda e: e.line)
        return last.indent, last.eq, last.tail.strip() or _DEFAULT_STYLE[self._dialect][2]

    def _insert(self, at: int, bodies: list[str]) -> None:
        if at > 0 and _body(self._lines[at - 1]) == self._lines[at - 1]:
            self._lines[at - 1] += self._newline  # the line before had no line ending (end of file)
        self._lines[at:at] = [b + self._newline for b in bodies]

    def _index(self) -> None:
        """(Re)build the section/key index from the lines; raises ChrystokiSyntaxError."""
        self._dialect = _detect_dialect(self._lines)
        sections: list[_Section] = []
        current: _Section | None = None

        def fail(index: int, message: str) -> ChrystokiSyntaxError:
            return ChrystokiSyntaxError(f"{self._source}:{index + 1}: {message}")

        def open_section(index: int, name: str) -> _Section:
            if not name:
                raise fail(index, "section header without a name")
            clash = next((s for s in sections if s.name.casefold() == name.casefold()), None)
            if clash:
                raise fail(index, f"section {name!r} already defined at line {clash.header + 1}")
            section = _Section(name, index, index)
            sections.append(section)
            return section

        for index, raw in enumerate(self._lines):
            text = _body(raw).lstrip("\ufeff").strip()
            if not text or text.startswith(_COMMENT_PREFIXES):
                continue
            conf_header = _CONF_HEADER.match(text) if self._dialect == CONF else None
            ini_header = _INI_HEADER.match(text)
            if conf_header:
                if current:
                    raise fail(
                        index,
                        f"section {conf_header['name']!r} opened inside section "
                        f"{current.name!r} (line {current.header + 1}), which has no '}}' yet",
                    )
                current = open_section(index, conf_header["name"])
            elif self._dialect == CONF and text == "}":
                if not current:
                    raise fail(index, "'}' without an open section")
                current.last, current = index, None
            elif ini_header and self._dialect == INI:
                current = open_section(index, ini_header["name"].strip())
            elif ini_header:
                raise fail(
                    index, f"ini-style header {text!r} in a Chrystoki.conf-style file (expected 'Name = {{')"
                )
            elif "=" not in text:
                raise fail(index, f"missing '=' in {text!r} (expected 'Key = Value;')")
            elif not current:
                raise fail(index, f"key line outside a section: {text!r}")
            else:
                match = _ENTRY.match(_body(raw))
                key = match["key"].lstrip("\ufeff")
                if not key:
                    raise fail(index, f"missing key before '=' in {text!r}")
                if key in current.entries:
                    first = current.entries[key].line + 1
                    raise fail(
                        index, f"key {key!r} repeated in section {current.name!r} (first at line {first})"
                    )
                current.entries[key] = _Entry(
                    key, match["value"], index, match["indent"], match["eq"], match["tail"]
                )
                if self._dialect == INI:
                    current.last = index
        if current and self._dialect == CONF:
            raise fail(
                current.header, f"unterminated section {current.name!r}: no closing '}}' before end of file"
            )
        self._sections = sections


def _body(raw: str) -> str:
    return raw.rstrip("\r\n")


def _detect_dialect(lines: list[str]) -> str:
    for raw in lines:
        text = _body(raw).lstrip("\ufeff").strip()
        if text and not text.startswith(_COMMENT_PREFIXES):
            return INI if _INI_HEADER.match(text) else CONF
    return CONF
