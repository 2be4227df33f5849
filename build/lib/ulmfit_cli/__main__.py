"""`python -m ulmfit_cli ...` runs the same Typer app as the `ulmfit` console script."""
from ulmfit_cli.cli import app

app(prog_name="ulmfit")
