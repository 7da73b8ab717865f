"""The combined query a search by words takes (`GET /api/search`'s parameters or `POST /api/search`'s
JSON body): words (`q`), more like an item (`like` = its id, `like_at` a moment in seconds,
`like_line` a caption's line), and terms added and subtracted as rclip writes them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import HTTPException, Query
from pydantic import BaseModel, Field

from jrsearch.retrieval.errors import QueryError
from jrsearch.retrieval.image_url import require_public_host
from jrsearch.retrieval.request import Like, QueryTerm, is_url, parse_term

MAX_QUERY_CHARS = 1000
MAX_TERMS = 16  # each added or subtracted (a URL term is fetched: a few, not hundreds)
TERM_HELP = ("[W:]TERM, repeatable: words, an image URL (https://...) or like:ID[@SECONDS] (an item by id); "
             "W weighs it (2:golden retriever)")


class QueryIn(BaseModel):
    """What to search for: at least one of `q`, `like` and `add`."""

    q: str | None = Field(None, min_length=1, max_length=MAX_QUERY_CHARS, description="Words to search for.")
    like: int | None = Field(None, ge=0, description="More like this item (its id): its stored vector.")
    like_at: float | None = Field(None, ge=0, description="With like: the moment (seconds) of a video or sound.")
    like_line: int | None = Field(None, ge=1, description="With like: the line of a text corpus.")
    add: list[Annotated[str, Field(max_length=MAX_QUERY_CHARS)]] = Field(
        default_factory=list, max_length=MAX_TERMS, description=f"Terms added: {TERM_HELP}.")
    subtract: list[Annotated[str, Field(max_length=MAX_QUERY_CHARS)]] = Field(
        default_factory=list, max_length=MAX_TERMS, description=f"Terms subtracted: {TERM_HELP}.")

    def terms(self) -> tuple[QueryTerm, ...]:
        """What is added to the words' vector (a 422 for a term that does not parse, or nothing to search)."""
        if self.q is None and self.like is None and not self.add:
            raise HTTPException(422, "q: Field required (or like: an item id, or add: a term)")
        try:
            terms = [QueryTerm(Like(self.like, self.like_at, self.like_line))] if self.like is not None else []
            terms += [parse_term(text, files=False) for text in self.add]
            terms += [parse_term(text, subtract=True, files=False) for text in self.subtract]
            for term in terms:
                if isinstance(term.value, str) and is_url(term.value):
                    require_public_host(term.value)
        except QueryError as exc:
            raise HTTPException(422, str(exc)) from None
        return tuple(terms)

    def echo(self) -> dict[str, Any]:
        """For the response's `query`: what was given (`text`: the words)."""
        given = self.model_dump(exclude_none=True, exclude_defaults=True)
        if "q" in given:
            given["text"] = given.pop("q")
        return given


def query_params(
    q: Annotated[str | None, Query(min_length=1, max_length=MAX_QUERY_CHARS,
                                   description="Words to search for.")] = None,
    like: Annotated[int | None, Query(ge=0, description="More like this item (its id).")] = None,
    like_at: Annotated[float | None, Query(ge=0, description="With like: a moment of a video or sound (s).")] = None,
    like_line: Annotated[int | None, Query(ge=1, description="With like: a line of a text corpus.")] = None,
    add: Annotated[list[str] | None, Query(max_length=MAX_QUERY_CHARS, description=f"Added: {TERM_HELP}.")] = None,
    subtract: Annotated[list[str] | None, Query(max_length=MAX_QUERY_CHARS,
                                                description=f"Subtracted: {TERM_HELP}.")] = None,
) -> QueryIn:
    if len(add or ()) > MAX_TERMS or len(subtract or ()) > MAX_TERMS:
        raise HTTPException(422, f"add, subtract: at most {MAX_TERMS} terms each")
    return QueryIn(q=q, like=like, like_at=like_at, like_line=like_line, add=add or [], subtract=subtract or [])
