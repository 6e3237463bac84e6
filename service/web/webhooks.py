"""`POST /webhooks/ayrshare`: Ayrshare's signed deliveries, verified on the raw body before anything is parsed.

The handler hands the bytes and headers to `WebhookReceiver` and answers at once (Ayrshare wants a 2xx within 10 s);
passing the event on to the team's backend happens later, from the outbox.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, jsonify, request

from ..errors import BadRequest, ServiceError
from .errors import NO_STORE_HEADERS
from .schemas import WebhookReceiptSchema

bp = Blueprint("webhooks", __name__)

MAX_BODY_BYTES = 64 * 1024  # a social event is a few hundred bytes


class WebhooksOff(ServiceError):
    status = 404
    code = "webhooks_disabled"
    message = "This service does not receive Ayrshare webhooks: AYRSHARE_WEBHOOK_SECRET is not set."


@bp.post("/webhooks/ayrshare")
def ayrshare_webhook() -> tuple[Response, int]:
    receiver = current_app.extensions["webhook_receiver"]
    if receiver is None:
        raise WebhooksOff()
    g.auth = "webhook"
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise BadRequest("The webhook body is too large.", code="bad_webhook_body")
    body = request.stream.read(MAX_BODY_BYTES + 1)  # a chunked body has no Content-Length: read no more than this
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest("The webhook body is too large.", code="bad_webhook_body")
    receipt = receiver.receive(body, request.headers)
    response = jsonify(WebhookReceiptSchema().dump({"status": receipt.outcome, "id": receipt.event_id}))
    response.headers.update(NO_STORE_HEADERS)
    return response, 200
