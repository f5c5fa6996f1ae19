"""The error the send path raises for bad input; the API turns it into a 4xx JSON body."""


class SendRejected(Exception):
    """A send request that cannot be accepted.

    Attributes:
        code: machine-readable reason, e.g. ``recipient_not_found``.
        status: the HTTP status to answer with (400, 404, 409, 413, 422, 429).
        fields: per-field messages, ``{"field": ["message", ...]}``.
    """

    def __init__(self, code: str, message: str, status: int = 400, fields: dict | None = None):
        super().__init__(message)
        self.code = code
        self.status = status
        self.fields = fields or {}
