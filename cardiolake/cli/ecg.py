"""``cardiolake ecg``: signal tools on single records (R peaks of any WFDB or DICOM ECG)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Signal tools for single ECG records.", no_args_is_help=True)


@app.command()
def rpeaks(
    record: Path = typer.Argument(
        ..., help="WFDB record path (with or without .hea) or a DICOM ECG."
    ),
    lead: int = typer.Option(
        None, "--lead", help="Use only this ECG channel (0-based); default all leads."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print only a JSON list of sample indices."),
) -> None:
    """Detect R peaks; indices are at the record's own ECG sampling rate."""
    from cardiolake.cli.errors import UserError
    from pipelines.ecg_source import read_ecg_source
    from pipelines.signal.rpeaks import detect_rpeaks_multilead

    is_dicom = record.suffix.lower() == ".dcm"
    path = record if is_dicom else record.with_suffix(".hea")
    if not path.is_file():
        raise UserError(
            f"no ECG record {path}",
            "pass a WFDB record (the .hea path, with or without .hea) or a DICOM ECG (.dcm)",
        )
    source = read_ecg_source(str(path), "dicom" if is_dicom else "wfdb")
    n_leads = source.signals_mv.shape[1]
    if lead is not None and not 0 <= lead < n_leads:
        raise typer.BadParameter(
            f"{lead} is not a channel of this {n_leads}-lead record (0..{n_leads - 1})",
            param_hint="--lead",
        )
    signals = source.signals_mv if lead is None else source.signals_mv[:, [lead]]
    peaks = detect_rpeaks_multilead(signals, source.fs)
    if as_json:
        typer.echo(json.dumps([int(p) for p in peaks]))
        return
    table = Table(title=f"{record.name}: {len(peaks)} R peaks")
    for col in ("leads", "fs (Hz)", "beats", "mean HR (bpm)"):
        table.add_column(col)
    hr = (
        60.0 * (len(peaks) - 1) / ((peaks[-1] - peaks[0]) / source.fs)
        if len(peaks) > 1
        else float("nan")
    )
    names = source.lead_names if lead is None else (source.lead_names[lead],)
    table.add_row(",".join(names), f"{source.fs:g}", str(len(peaks)), f"{hr:.0f}")
    Console().print(table)
