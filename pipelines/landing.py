"""Inventory of a landing zone: which files are records, which are indexes, which are unknown.

Discovery is cheap (names and CSV headers only) and runs on the driver; the expensive
parsing of every record happens in Spark tasks. Every file found is accounted for: a record
to ingest, an index that enriches records, or an unknown file that goes to quarantine.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipelines.csv_format import CsvDialect, header_columns, sniff_csv

SourceFormat = Literal[
    "wfdb", "dicom", "echonet_avi", "labs_csv", "notes_csv", "labels_csv", "unknown"
]

#: Folders a landing zone may contain that ingestion must never read.
IGNORED_DIRS = frozenset({"truth", ".ipynb_checkpoints", "__MACOSX"})
#: CSV header signatures, first match wins.
_CSV_KINDS: tuple[tuple[str, frozenset[str]], ...] = (
    ("labs_csv", frozenset({"loinc", "value", "unit"})),
    ("notes_csv", frozenset({"note_id", "text"})),
    ("labels_csv", frozenset({"label_id", "reader", "triage"})),
    ("ptbxl_index", frozenset({"ecg_id", "filename_hr"})),
    ("echonet_filelist", frozenset({"FileName", "EF", "FPS"})),
    ("echonet_tracings", frozenset({"FileName", "X1", "Y1", "Frame"})),
    ("patient_index", frozenset({"mrn", "name", "birth_date"})),
)
#: Signal files a WFDB header may name.
_WFDB_SIGNAL_SUFFIXES = frozenset({".dat", ".xyz"})
#: WFDB annotation files: they travel with their record's header and are no record of their own.
_WFDB_ANNOTATION_SUFFIXES = frozenset({".atr", ".qrs", ".ecg", ".ari"})


@dataclass(frozen=True)
class SourceFile:
    """One input record: a file (or a WFDB header with its signal files)."""

    uri: str  # absolute path of the main file
    format: SourceFormat
    companions: tuple[str, ...] = ()  # other files of the same record (WFDB signal files)
    problem: str | None = None  # a quarantine reason the scan already knows (symlink loop)
    problem_detail: str = ""
    dialect: CsvDialect | None = None  # for CSV exports: encoding and delimiter
    # from the scan, over the main file and its companions: total size, newest mtime (ns);
    # None when the scan could not stat it (discovery then always reads it)
    size_bytes: int | None = None
    mtime_ns: int | None = None


@dataclass
class LandingInventory:
    """What a landing zone holds."""

    root: Path
    records: list[SourceFile] = field(default_factory=list)
    indexes: dict[str, list[Path]] = field(default_factory=dict)
    unknown: list[SourceFile] = field(default_factory=list)

    def by_format(self, fmt: SourceFormat) -> list[SourceFile]:
        """The records of one format."""
        return [r for r in self.records if r.format == fmt]


def _csv_kind(path: Path) -> str | None:
    header = set(header_columns(path))
    for kind, needed in _CSV_KINDS:
        if needed <= header:
            return kind
    return None


def _wfdb_signal_files(header: Path) -> tuple[str, ...]:
    """Signal files named in a WFDB header (missing ones are reported when parsing)."""
    names: list[str] = []
    try:
        lines = header.read_text(errors="replace").splitlines()
    except OSError:
        return ()
    # the first non-comment line is the record line; signal lines follow
    content = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    for line in content[1:]:
        fields = line.split()
        if fields[0] not in names and fields[0] != "~":
            names.append(fields[0])
    return tuple(str(header.parent / n) for n in names)


def scan_landing(root: Path) -> LandingInventory:
    """List every file under ``root`` as a record, an index or an unknown input.

    Args:
        root: the landing-zone folder.

    Returns:
        The inventory; records are sorted by URI so runs are reproducible.

    Raises:
        FileNotFoundError: when ``root`` does not exist.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"landing zone {root} does not exist")
    inventory = LandingInventory(root=root.resolve())
    found, problems = _walk(root)
    files = sorted(set(found))
    stats = {str(path): stat for path, stat in found.items()}

    def record(uri: str, fmt: SourceFormat, companions: tuple[str, ...] = (), **kw: Any) -> None:
        size, mtime = _record_stat([uri, *companions], stats)
        target = inventory.unknown if fmt == "unknown" else inventory.records
        target.append(SourceFile(uri, fmt, companions, size_bytes=size, mtime_ns=mtime, **kw))

    inventory.unknown.extend(problems)
    claimed: set[str] = set()
    for path in files:
        if path.suffix.lower() == ".hea":
            annotations = [
                str(path.with_suffix(s)) for s in sorted(_WFDB_ANNOTATION_SUFFIXES)
                if path.with_suffix(s).exists()
            ]  # fmt: skip
            claimed.update(annotations)
            companions = _wfdb_signal_files(path)
            claimed.update(companions)
            record(str(path), "wfdb", companions)
    for path in files:
        suffix = path.suffix.lower()
        if suffix == ".hea" or str(path) in claimed:
            continue
        if suffix == ".dcm" or (suffix == "" and _looks_like_dicom(path)):
            record(str(path), "dicom")
        elif suffix == ".avi":
            record(str(path), "echonet_avi")
        elif suffix == ".csv":
            kind = _csv_kind(path)
            if kind in {"labs_csv", "notes_csv", "labels_csv"}:
                record(str(path), kind, dialect=sniff_csv(path))  # type: ignore[arg-type]
            elif kind is not None:
                inventory.indexes.setdefault(kind, []).append(path)
            else:
                record(str(path), "unknown")
        elif suffix in _WFDB_SIGNAL_SUFFIXES:
            # a signal file no header names (an orphan): nothing can read it
            record(str(path), "unknown")
        elif path.name.lower() in {
            "readme",
            "readme.md",
            "readme.txt",
            "license",
            "license.txt",
            "sha256sums.txt",
        }:
            continue  # documentation shipped with public datasets
        else:
            record(str(path), "unknown")
    inventory.records.sort(key=lambda r: r.uri)
    return inventory


def _record_stat(
    paths: list[str], stats: dict[str, tuple[int, int]]
) -> tuple[int | None, int | None]:
    """Total size and newest mtime (ns) of a record's files that exist (as hashing reads them).

    A companion the walk did not meet (outside the landing zone) is stat'ed here; a main file
    without a stat gives (None, None), so discovery never trusts it.
    """
    size, newest = 0, 0
    for i, path in enumerate(paths):
        stat = stats.get(path)
        if stat is None:
            try:
                st = os.stat(path)
            except OSError:
                if i == 0:
                    return None, None
                continue  # a missing signal file: hashing skips it too
            stat = (st.st_size, st.st_mtime_ns)
        size += stat[0]
        newest = max(newest, stat[1])
    return size, newest


def _walk(root: Path) -> tuple[dict[Path, tuple[int, int]], list[SourceFile]]:
    """Every regular file under ``root`` (symlinks followed once), and the paths that fail.

    A symbolic link that loops, dangles or leads back into a folder already walked, a folder
    that cannot be listed and anything that is no regular file (a FIFO would block a reader)
    come back as unknown inputs with a quarantine reason, so nothing is silently dropped.
    Each file comes with its size and modification time (ns), from the one ``stat`` the walk
    makes anyway.
    """
    files: dict[Path, tuple[int, int]] = {}
    problems: list[SourceFile] = []
    walked: set[Path] = {root.resolve()}
    stack = [root]

    def problem(path: Path, reason: str, detail: str) -> None:
        problems.append(
            SourceFile(str(path.absolute()), "unknown", problem=reason, problem_detail=detail)
        )

    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            problem(folder, "unreadable_path", f"folder cannot be listed ({exc.strerror})")
            continue
        for entry in entries:
            path = Path(entry.path)
            if IGNORED_DIRS.intersection(path.relative_to(root).parts):
                continue
            try:
                if entry.is_symlink():
                    try:
                        target = path.resolve(strict=True)
                    except RuntimeError:
                        problem(path, "symlink_loop", "symbolic link loops back on itself")
                        continue
                    except OSError as exc:
                        if exc.errno == errno.ELOOP:
                            problem(path, "symlink_loop", "symbolic link loops back on itself")
                        elif exc.errno == errno.ENOENT:
                            problem(path, "broken_symlink", "symbolic link target is missing")
                        else:
                            problem(
                                path, "unreadable_path", f"link cannot be followed ({exc.strerror})"
                            )
                        continue
                    if target.is_dir():
                        if target in walked or target in root.resolve().parents:
                            problem(
                                path,
                                "symlink_loop",
                                "symbolic link leads to a folder already walked",
                            )
                        else:
                            walked.add(target)
                            stack.append(path)
                    elif target.is_file():
                        st = entry.stat(follow_symlinks=True)
                        files[target] = (st.st_size, st.st_mtime_ns)
                    else:
                        problem(path, "unreadable_path", "not a regular file")
                elif entry.is_dir(follow_symlinks=False):
                    walked.add(path.resolve())
                    stack.append(path)
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    files[path.resolve()] = (st.st_size, st.st_mtime_ns)
                else:
                    problem(path, "unreadable_path", "not a regular file")
            except OSError as exc:
                problem(path, "unreadable_path", f"cannot be inspected ({exc.strerror})")
    return files, problems


def _looks_like_dicom(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False
