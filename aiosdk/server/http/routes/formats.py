"""``/api/v1/formats``: the formats a node's data can be read (exported) as."""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel

from ...catalog import nodes
from ...data import export
from ..dependencies import Current, viewer_of
from ..openapi import documented_error

__all__ = ["FormatModel", "FormatsAnswer", "router"]

router = APIRouter(prefix="/formats", tags=["arrays"])


class FormatModel(BaseModel):
    """A format: its MIME type and the file suffixes that name it."""

    mime: str
    suffixes: list[str]


class FormatsAnswer(BaseModel):
    """The formats of a node's data, its wire form first (none for a container)."""

    formats: list[FormatModel]


@router.get(
    "/{path:path}",
    summary="List a node's export formats",
    response_model=FormatsAnswer,
    responses={
        400: documented_error("Invalid path"),
        404: documented_error("No node at the path, or none the caller may read"),
    },
)
async def get_formats(path: str, call: Current) -> Response:
    """The formats the data of the node at ``path`` can be had in (``?format=`` of its full
    read takes a MIME type or a suffix of one)."""
    viewer = await viewer_of(call)
    view = await nodes.read_node(call.session, viewer, path, call.state.catalog.reads)
    answer = FormatsAnswer.model_validate(
        export.formats_answer(view.node.structure_family, view.node.structure)
    )
    return Response(answer.model_dump_json(), media_type="application/json")
