"""`edge-lung data ...`: inspect a database (ICBHI layout, a manifest, SPRSound), import one as a manifest,
or write a synthetic one."""

from __future__ import annotations

import json
from pathlib import Path

import typer

data_app = typer.Typer(help="Inspect a database (ICBHI layout, manifest, SPRSound), import one as a manifest, or "
                       "write a synthetic one.", no_args_is_help=True)


@data_app.command("summary")
def summary(
    db_dir: Path = typer.Argument(..., help="Database: an ICBHI-layout folder (wav + txt + split file), a manifest "
                                  "(.csv/.jsonl, or a folder holding manifest.csv) or a SPRSound-layout folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the full summary as JSON (lists every problem)."),
    strict: bool = typer.Option(False, "--strict", help="Fail on the first problem instead of reporting it."),
    val_fraction: float = typer.Option(0.2, help="Share of train cycles moved to the patient-grouped val split."),
    val_seed: int = typer.Option(0, help="Seed of the patient-grouped validation split."),
) -> None:
    """Recordings and cycles per split, class, device and sample rate, and every problem found."""
    from edge_lung.data.icbhi import Database, DataError, format_summary

    try:
        db = Database.scan(db_dir, strict=strict, val_fraction=val_fraction, val_seed=val_seed)
    except DataError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    s = db.summary()
    typer.echo(json.dumps(s, indent=2) if as_json else format_summary(s))


@data_app.command("import")
def import_(
    src: Path = typer.Argument(..., help="Database to import: ICBHI layout, a manifest or the SPRSound layout."),
    out: Path = typer.Option(..., "--out", help="Folder to write manifest.csv into (the audio is not copied)."),
    val_fraction: float = typer.Option(0.2, help="Share of train cycles moved to the patient-grouped val split."),
    val_seed: int = typer.Option(0, help="Seed of the patient-grouped validation split."),
) -> None:
    """Write any database as a manifest database (file, start, end, label, patient, device, location, split)."""
    from edge_lung.data.icbhi import Database, DataError, format_summary, import_database

    try:
        path = import_database(src, out, val_fraction, val_seed)
    except DataError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"wrote {path}")
    typer.echo(format_summary(Database.scan(out, val_fraction=val_fraction, val_seed=val_seed).summary()))


@data_app.command("synth")
def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write the synthetic database into."),
    recordings: int = typer.Option(100, "--recordings", "-n", help="Number of recordings to write."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed writes the same files."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a synthetic database written here before "
                                   "(never a real database or any other folder)."),
) -> None:
    """Write a synthetic database in the official ICBHI layout (learnable crackles and wheezes) into a new or
    empty folder."""
    from edge_lung.data.synth import synthesize_database

    try:
        r = synthesize_database(out_dir, recordings=recordings, seed=seed, overwrite=overwrite)
    except (ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        f"wrote {r.recordings} recordings to {r.out_dir}: cycles normal/crackle/wheeze/both = "
        f"{'/'.join(map(str, r.cycles_per_class))}; {r.renamed_split_entries} split entries use an older "
        f"device name, {r.split_entries_without_recording} have no recording"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
