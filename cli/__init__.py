"""typer commands: parse options, call the library, render. The only package that exits."""
