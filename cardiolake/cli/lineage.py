"""``cardiolake lineage KEY``: from a prediction (or a model version) back to the raw files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.tree import Tree

from cardiolake.cli.errors import UserError

console = Console()
err = Console(stderr=True)


def lineage(
    key: str = typer.Argument(
        ..., help="A prediction key ('latest': the newest), or a model version (3, v3)."
    ),
    lake: Path = typer.Option(None, "--lake", help="Lake holding predictions and registry."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole chain as JSON."),
    files: int = typer.Option(3, "--files", help="Raw files shown per table version."),
) -> None:
    """Walk prediction -> model version -> training runs -> Delta versions -> raw files."""
    from cardiolake.cli.model import _connect
    from serving.lineage import LineageError, current_sha256
    from serving.lineage import lineage as walk

    root = _connect(lake)
    try:
        chain = walk(root, key)
    except LineageError as exc:
        raise UserError(
            str(exc), "give a prediction_key of scoring.predictions, a model version or `latest`"
        ) from exc
    if as_json:
        json.dump(chain.as_dict(), sys.stdout, indent=2, default=str)
        print()
        return
    top = Tree(f"[bold]lineage of {key}[/]")
    p = chain.prediction
    if p is not None:
        node = top.add(f"prediction {p['prediction_key'][:16]}…: score {p['score']:.4f} -> "
                       f"{p['decision']} ({p['lead_set']}), scored {p['scored_at']}")  # fmt: skip
        src = Path(str(p["source_uri"]))
        now = current_sha256(str(src))
        same = ("matches the file today" if now == p["source_sha256"]
                else "file changed since" if now else "file not reachable here")  # fmt: skip
        node.add(f"raw file {src} sha256 {p['source_sha256']} ({same})")
        node.add(f"patient {p['patient_key']}, recording {p['recording_key'][:16]}…")
    m = chain.model
    model = top.add(f"model {m['name']} v{m['version']} (aliases: {', '.join(m['aliases']) or '-'};"
                    f" export run {m['run_id']})")  # fmt: skip
    for name, digest in sorted(m["sha256"].items()):
        model.add(f"{name} sha256 {digest}")
    shown: set[str] = set()
    for run in chain.runs:
        r = model.add(f"[bold]{run.stage}[/] run {run.run_id} ({run.experiment})"
                      + (f", parent {run.parent}" if run.parent else ""))  # fmt: skip
        for table, version in sorted(run.delta.items()):
            raw = chain.raw_files.get(f"{table}@{version}", [])
            t = r.add(f"{table} @ v{version}: {len(raw)} raw file(s)")
            if f"{table}@{version}" in shown:
                continue
            shown.add(f"{table}@{version}")
            for f in raw[:files]:
                t.add(f"{f['uri']} {f['sha256'][:16]}…")
            if len(raw) > files:
                t.add(f"… {len(raw) - files} more (--json lists all)")
    console.print(top)
