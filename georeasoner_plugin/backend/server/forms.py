"""Reading an ask's multipart body and validating its `request` JSON."""
from __future__ import annotations

from typing import Any, Dict, Tuple

from pydantic import ValidationError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

from ...core.api import IMAGE_PART, MAX_REQUEST_PART_BYTES, REQUEST_PART, QuestionError, check_question
from ...core.profiles import UnknownProfileError, get_profile
from ...core.protocol import GRANULARITIES
from ..cascade import AskOptions, CascadeError
from .errors import ApiError, BodyTooLarge, sentence, too_large_message
from .schema import AskRequest
from .upload import MEMORY_PART_MAX_BYTES, SPOOL_MAX_BYTES, FormParserError, MultipartForm, multipart_parser


class ClientGone(Exception):
    """The client disconnected before its body was read: nobody is left to answer."""

    def __init__(self, received: int):
        super().__init__(f"the client disconnected during the upload ({received} bytes received)")
        self.received = received


async def read_form(request: Request, max_body_bytes: int, budget=None) -> Dict[str, Any]:
    """{'image': upload.ImagePart (in memory or spooled) or None, 'request': str, 'form': to close}
    from the multipart body, or ApiError 413 / 415 / 422, or ClientGone. 'image' is None only when
    the body has no image part: the request must then name a shared capture (`image_path`; see
    require_image). With `budget` (admission.ImageBudget), an image part of up to
    upload.MEMORY_PART_MAX_BYTES is read into memory when its declared size fits the budget."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media_type",
                       f"send the request as multipart/form-data with a file part '{IMAGE_PART}' and a text part "
                       f"'{REQUEST_PART}' (JSON); got Content-Type {content_type[:80] or 'none'!r}")
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(422, "malformed_form", "the Content-Type has no multipart boundary; send the body as "
                                              "multipart/form-data (an HTTP library does this for you)")
    try:
        declared = int(request.headers.get("content-length", ""))
    except ValueError:
        declared = None  # chunked: the size is known only at the end
    reservation = None
    if budget is not None and declared is not None and 0 < declared <= MEMORY_PART_MAX_BYTES:
        reservation = budget.try_reserve(declared)  # None: no room now, the part is spooled instead
    form = MultipartForm(declared or 0, reservation)
    if reservation is None and declared is not None and declared > SPOOL_MAX_BYTES:
        form.expect_large_body()
    received = 0
    try:
        try:
            parser = multipart_parser(boundary, form)
            async for chunk in request.stream():
                received += len(chunk)
                parser.write(chunk)
                if form.image is not None and form.image.flush_due:
                    await form.image.flush()
            parser.finalize()
            if form.image is not None:
                await form.image.flush()
        except BodyTooLarge:
            raise ApiError(413, "body_too_large", too_large_message(max_body_bytes)) from None
        except ClientDisconnect:
            raise ClientGone(received) from None
        except (ApiError, ClientGone):
            raise
        except FormParserError as exc:
            raise ApiError(422, "malformed_form", f"the multipart body could not be read ({str(exc)[:120].rstrip('.')}); "
                                                  f"send one file part 'image' and one JSON part 'request' (at most "
                                                  f"{MAX_REQUEST_PART_BYTES // 1024} KiB)") from None
        except Exception:  # noqa: BLE001 - whatever the parser chokes on, the body is malformed
            raise ApiError(422, "malformed_form", "the multipart body could not be read; send one file part 'image' "
                                                  "and one JSON part 'request'") from None
        if not form.ended:
            raise ApiError(422, "malformed_form", "the multipart body ended before its closing boundary; send one "
                                                  "file part 'image' and one JSON part 'request'")
        if form.request is None:
            raise ApiError(422, "malformed_form", f"the body needs exactly one part named {REQUEST_PART!r} (found 0): "
                                                  f"'image' is the image file, 'request' the JSON with the question")
        return {"image": form.image, "request": form.request.decode("utf-8", "replace"), "form": form}
    except BaseException:
        await form.close()
        raise


async def read_form_bytes(request: Request, max_body_bytes: int) -> Dict[str, Any]:
    """{'image': bytes, 'request': str}: read_form for routes that want the image in memory (the
    pre-split `_read_form` contract); an aborted upload is ApiError 499 (one log line, no traceback).
    Such a route should still charge the decoded size (images.probe_image, admission.decode_cost,
    service.budget) before decoding."""
    try:
        fields = await read_form(request, max_body_bytes)
    except ClientGone as exc:
        raise ApiError(499, "client_gone", str(exc)) from None
    try:
        return {"image": await require_image(fields["image"]).read(), "request": fields["request"]}
    finally:
        await fields["form"].close()


def require_image(image_part):
    """The image part, or ApiError 422 when the body had none."""
    if image_part is None:
        raise ApiError(422, "malformed_form", f"the body needs exactly one part named {IMAGE_PART!r} (found 0): "
                                              f"'image' is the image file, 'request' the JSON with the question")
    return image_part


def validate_request(text: str) -> Tuple[AskRequest, str, AskOptions]:
    """The `request` part's JSON -> (the model, the stripped question, cascade options), or ApiError 422."""
    try:
        ask_request = AskRequest.model_validate_json(text)
    except ValidationError as exc:
        raise _field_error(exc) from None
    try:
        question = check_question(ask_request.question)
    except QuestionError as exc:
        raise ApiError(422, exc.code, str(exc)) from None
    if ask_request.profile is not None:
        try:
            get_profile(ask_request.profile)
        except UnknownProfileError as exc:
            raise ApiError(422, "unknown_profile", f"{exc}; pick one of those or null for the server's default") \
                from None
    outputs = [g for g in GRANULARITIES if g in ask_request.outputs]
    options = AskOptions(granularities=outputs, max_new_tokens=ask_request.max_new_tokens,
                         temperature=ask_request.temperature, top_p=ask_request.top_p, seed=ask_request.seed,
                         simplify_tolerance=ask_request.simplify_tolerance, min_area=ask_request.min_area)
    try:
        options.validate()
    except CascadeError as exc:
        raise ApiError(422, "invalid_field", sentence(str(exc))) from None
    return ask_request, question, options


def _field_error(exc: ValidationError) -> ApiError:
    errors = exc.errors(include_url=False, include_input=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return ApiError(422, "invalid_json", "the 'request' part is not valid JSON; send a JSON object such as "
                                             "{\"question\": \"...\"}")
    if any(e["type"] in ("model_type", "dict_type", "model_attributes_type") and not e["loc"] for e in errors):
        return ApiError(422, "invalid_json", "the 'request' part must be a JSON object such as {\"question\": \"...\"}")
    problems = []
    for error in errors[:3]:
        field = ".".join(str(part) for part in error["loc"]) or "request"
        if error["type"] == "extra_forbidden":
            known = ", ".join(AskRequest.model_fields)
            problems.append(f"'{field}' is not a known field (known: {known})")
        elif error["type"] == "missing":
            problems.append(f"'{field}' is required")
        else:
            problems.append(f"'{field}': {error['msg'][:1].lower()}{error['msg'][1:]}")
    code = "missing_question" if any(e["type"] == "missing" and e["loc"] == ("question",) for e in errors) \
        else "invalid_field"
    return ApiError(422, code, "; ".join(problems) + "; fix the request and resend")
