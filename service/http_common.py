"""What the route modules of the HTTP app share: the orjson response and the OpenAPI annotations.

Bodies are read by hand in the `serve` wrapper (service/http.py), so the routes declare their
request body and error shapes here for /openapi.json and /docs to describe the real API.
"""

from __future__ import annotations

from typing import Any

import orjson
import pydantic
from fastapi.responses import Response

from service import contract as c
from service.errors import Style


class JSON(Response):
    """orjson response: numpy arrays serialise without a Python float per element."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def body_doc(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """A route's request body in OpenAPI: the contract model, by reference."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def errors_doc(style: Style) -> dict[int | str, dict[str, Any]]:
    """The error statuses a route of this style answers, each with its body model."""
    model = c.TEIError if style == "tei" else c.OpenAIError
    codes = (400, 401, 403, 408, 413, 422, 429, 503) + ((424,) if style == "tei" else (404, 500))
    return {code: {"model": model} for code in codes}
