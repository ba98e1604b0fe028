"""Reading an ask's multipart body and validating its `request` JSON."""
from __future__ import annotations

from typing import Any, Dict, Tuple

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from ...core.api import IMAGE_PART, MAX_REQUEST_PART_BYTES, REQUEST_PART, QuestionError, check_question
from ...core.profiles import UnknownProfileError, get_profile
from ...core.protocol import GRANULARITIES
from ..cascade import AskOptions, CascadeError
from .errors import ApiError, BodyTooLarge, sentence, too_large_message
from .schema import AskRequest


SPOOL_MAX_BYTES = 8 * 1024 * 1024


class _SpoolingMultiPartParser(MultiPartParser):
    # Uploads up to 8 MiB (a typical capture) stay in memory; larger ones go to a temporary file, so
    # the bodies being read at once (at most --queue-size of them) never sit in memory whole. Above
    # the threshold each chunk costs a thread hop (60 ms for a 12 MB TIFF), a price paid only by big ones.
    spool_max_size = SPOOL_MAX_BYTES


class ClientGone(Exception):
    """The client disconnected before its body was read: nobody is left to answer."""

    def __init__(self, received: int):
        super().__init__(f"the client disconnected during the upload ({received} bytes received)")
        self.received = received


async def read_form(request: Request, max_body_bytes: int) -> Dict[str, Any]:
    """{'image': UploadFile (in memory or spooled) or None, 'request': str, 'form': to close} from the
    multipart body, or ApiError 413 / 415 / 422, or ClientGone. 'image' is None only when the body has
    no image part: the request must then name a shared capture (`image_path`; see require_image)."""
    counter = [0]
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media_type",
                       f"send the request as multipart/form-data with a file part '{IMAGE_PART}' and a text part "
                       f"'{REQUEST_PART}' (JSON); got Content-Type {content_type[:80] or 'none'!r}")
    try:
        form = await _SpoolingMultiPartParser(request.headers, _counted(request, counter), max_files=2,
                                              max_fields=2, max_part_size=MAX_REQUEST_PART_BYTES).parse()
    except BodyTooLarge:
        raise ApiError(413, "body_too_large", too_large_message(max_body_bytes)) from None
    except ClientDisconnect:
        raise ClientGone(counter[0]) from None
    except MultiPartException as exc:
        raise ApiError(422, "malformed_form", f"the multipart body could not be read ({exc.message}); send one "
                                              f"file part 'image' and one JSON part 'request' (at most "
                                              f"{MAX_REQUEST_PART_BYTES // 1024} KiB)") from None
    except Exception:  # noqa: BLE001 - whatever the parser chokes on, the body is malformed
        raise ApiError(422, "malformed_form", "the multipart body could not be read; send one file part 'image' "
                                              "and one JSON part 'request'") from None
    try:
        names = [name for name, _ in form.multi_items()]
        unknown = sorted(set(names) - {IMAGE_PART, REQUEST_PART})
        if unknown:
            raise ApiError(422, "malformed_form", f"unexpected part(s) {', '.join(repr(n) for n in unknown)}; send "
                                                  f"only 'image' (the file) and 'request' (JSON)")
        for name in (IMAGE_PART, REQUEST_PART):
            if names.count(name) != 1 and not (name == IMAGE_PART and not names.count(name)):
                raise ApiError(422, "malformed_form", f"the body needs exactly one part named {name!r} (found "
                                                      f"{names.count(name)}): 'image' is the image file, 'request' "
                                                      f"the JSON with the question")
        image_part, request_part = form.get(IMAGE_PART), form[REQUEST_PART]
        if image_part is not None and not isinstance(image_part, UploadFile):
            raise ApiError(422, "malformed_form", "the 'image' part must be a file part (Content-Disposition with a "
                                                  "filename) holding the image bytes")
        if isinstance(request_part, UploadFile):
            raw = await request_part.read(MAX_REQUEST_PART_BYTES + 1)
            if len(raw) > MAX_REQUEST_PART_BYTES:
                raise ApiError(422, "malformed_form", f"the 'request' part is larger than "
                                                      f"{MAX_REQUEST_PART_BYTES // 1024} KiB; it holds only the "
                                                      f"question and options")
            request_part = raw.decode("utf-8", "replace")
        return {"image": image_part, "request": request_part, "form": form}
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


async def _counted(request: Request, counter):
    async for chunk in request.stream():
        counter[0] += len(chunk)
        yield chunk


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
