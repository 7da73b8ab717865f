"""typer commands: parse options, call the library, render. The only package that exits."""

if __name__ != "jrsearch.cli":  # one import name: the checkout's folder is not a package of its own
    raise ImportError(f"import jrsearch.cli, not {__name__} (install the checkout: pip install -e .)")
