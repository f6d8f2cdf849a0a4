"""`cartwise settings-reference`: the CARTWISE_* settings reference, printed or written into docs/deploy.md."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("settings-reference")
@click.option("--write", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Rewrite the section between the settings markers of this file (docs/deploy.md) instead of printing.")
def settings_reference(path: Path | None) -> None:
    """The CARTWISE_* settings reference (variable, type, default, description), generated from the Settings
    classes; secrets are shown unset."""
    from cartwise.app.settings_reference import render, update_file

    if path is None:
        click.echo(render())
        return
    try:
        changed = update_file(path)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{path}: {'updated' if changed else 'up to date'}")
