"""`jrsearch query`'s combined-query options: `--like`, `--add`, `--subtract`, and `--image` as a URL.

The main query (TEXT, `--image FILE`, `--audio FILE`) is embedded as before; `--like`, an image URL
and every `--add`/`--subtract` become the `SearchRequest`'s terms (`retrieval/request.QueryTerm`),
added to it by the service."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # imported where used: `jrsearch --help` and other commands need none of it
    from jrsearch.retrieval.request import QueryTerm

LikeOpt = Annotated[str | None, typer.Option(
    "--like", metavar="PATH[@SECONDS]", help="More like this: search with an indexed file's stored vector "
                                             "(PATH@SECONDS: a video's or sound's moment; PATH#LINE: a caption).")]
AddOpt = Annotated[list[str] | None, typer.Option(
    "--add", metavar="[W:]TERM", help="Add a term to the query (repeatable): words, an image or sound file, an "
                                      "image URL or like:PATH[@SECONDS]; W: weighs it (--add '2:golden retriever').")]
SubtractOpt = Annotated[list[str] | None, typer.Option(
    "--subtract", metavar="[W:]TERM", help="Subtract a term from the query (repeatable), as --add.")]
PreviewOpt = Annotated[bool, typer.Option(
    "--preview", help="Show thumbnails inline (terminals that speak the kitty or iTerm2 image protocol).")]

MAIN_QUERY = ("give one of a TEXT query, --image PATH|URL, --audio PATH or --like PATH[@SECONDS] "
              "(--add and --subtract add terms to it)")


def main_query(text: str | None, image: str | None, audio: Path | None) -> tuple[str, str | Path] | None:
    """The query the service embeds itself: (modality, words or file); None where the main query is
    a term (`--like`, an image URL) or there is none (only `--add`)."""
    from jrsearch.retrieval.request import is_url

    if text is not None:
        return "text", text
    if image is not None and not is_url(image):
        return "image", Path(image)
    if audio is not None:
        return "audio", audio
    return None


def query_terms(image: str | None, like: str | None, add: list[str] | None,
                subtract: list[str] | None) -> tuple[QueryTerm, ...]:
    """The terms added to the main query's vector: `--like` or an image URL (weight 1) first, then
    every `--add` and `--subtract`; a `QueryError` for one that does not parse."""
    from jrsearch.retrieval.request import QueryTerm, is_url, parse_like, parse_term

    terms: list[QueryTerm] = []
    if like is not None:
        terms.append(QueryTerm(parse_like(like)))
    if image is not None and is_url(image):
        terms.append(QueryTerm(image))
    terms += [parse_term(text) for text in add or ()]
    terms += [parse_term(text, subtract=True) for text in subtract or ()]
    return tuple(terms)
