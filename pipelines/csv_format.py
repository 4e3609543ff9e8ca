"""How a hospital CSV is written: encoding, byte-order mark, delimiter; and a tolerant reader.

Exports arrive in UTF-8 with or without a BOM, UTF-16 from spreadsheet tools, Windows-1252
from older systems, with commas, semicolons (European locales), tabs or pipes. The landing
scan sniffs each CSV once so the header is recognised whatever the dialect, Spark reads it
with the right options, and the small index files are read row by row with malformed rows
set aside (counted by line number, never copied) instead of failing the run.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_SAMPLE_BYTES = 64 * 1024
_DELIMITERS = (",", ";", "\t", "|")
#: Python codec -> the name Spark's CSV reader takes.
_SPARK_ENCODING = {
    "utf-8": "UTF-8",
    "utf-8-sig": "UTF-8",
    "utf-16": "UTF-16",
    "cp1252": "windows-1252",
    "latin-1": "ISO-8859-1",
}


@dataclass(frozen=True)
class CsvDialect:
    """The encoding and delimiter of one CSV file.

    Attributes:
        encoding: Python codec (``utf-8``, ``utf-8-sig``, ``utf-16``, ``cp1252``, ``latin-1``).
        delimiter: the field separator.
    """

    encoding: str = "utf-8"
    delimiter: str = ","

    @property
    def spark_encoding(self) -> str:
        """The same encoding as Spark's CSV reader names it."""
        return _SPARK_ENCODING[self.encoding]


def _encoding(sample: bytes) -> str:
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        if exc.start >= len(sample) - 3 and len(sample) == _SAMPLE_BYTES:
            return "utf-8"  # the sample cut a multi-byte character in half
    try:
        sample.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"  # decodes any byte


def sniff_csv(path: Path) -> CsvDialect:
    """Sniff a CSV's encoding (BOM, UTF-8, else Windows-1252) and delimiter from its header.

    Raises:
        OSError: when the file cannot be read.
    """
    with Path(path).open("rb") as fh:
        sample = fh.read(_SAMPLE_BYTES)
    encoding = _encoding(sample)
    text = sample.decode(encoding, errors="replace")
    header = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
    counts = {d: header.count(d) for d in _DELIMITERS}
    delimiter = max(_DELIMITERS, key=lambda d: (counts[d], d == ","))
    return CsvDialect(encoding, delimiter if counts[delimiter] else ",")


def _open(path: Path, dialect: CsvDialect) -> io.TextIOWrapper:
    return Path(path).open(newline="", encoding=dialect.encoding, errors="replace")


def header_columns(path: Path, dialect: CsvDialect | None = None) -> list[str]:
    """The header's column names (BOM and surrounding whitespace stripped); [] if unreadable."""
    try:
        dialect = dialect or sniff_csv(path)
        with _open(path, dialect) as fh:
            header = next(csv.reader(fh, delimiter=dialect.delimiter), [])
    except (OSError, csv.Error):
        return []
    return [c.lstrip("\ufeff").strip() for c in header]


@dataclass(frozen=True)
class BadRow:
    """A row of an index file that was set aside: where, and what is wrong (no content)."""

    path: str
    line: int
    problem: str


def read_rows(
    path: Path, required: tuple[str, ...] = ()
) -> Iterator[tuple[int, dict[str, str] | BadRow]]:
    """Rows of a small CSV as dicts, malformed ones as :class:`BadRow` (the rest still read).

    A row is malformed when its field count differs from the header's, a required column is
    empty, or the CSV parser rejects the line.

    Args:
        path: the file.
        required: columns that must be non-empty.

    Yields:
        (line number, row dict or BadRow).
    """
    dialect = sniff_csv(path)
    with _open(path, dialect) as fh:
        reader = csv.reader(fh, delimiter=dialect.delimiter)
        try:
            header = [c.lstrip("\ufeff").strip() for c in next(reader, [])]
        except csv.Error:
            yield 1, BadRow(str(path), 1, "unparseable_header")
            return
        while True:
            line = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error:
                yield line, BadRow(str(path), line, "unparseable_line")
                continue
            if not any(f.strip() for f in fields):
                continue  # blank line
            if len(fields) != len(header):
                problem = f"{len(fields)}_fields_for_{len(header)}_columns"
                yield line, BadRow(str(path), line, problem)
                continue
            row = {h: f.strip() for h, f in zip(header, fields, strict=True)}
            missing = [c for c in required if not row.get(c)]
            if missing:
                yield line, BadRow(str(path), line, f"empty_{missing[0]}")
                continue
            yield line, row
