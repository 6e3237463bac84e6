"""gunicorn's own log lines (its error log and, when on, its access log) as JSON like the service's.

`JsonLogger` is gunicorn's `logger_class` (config/gunicorn.conf.py): it keeps gunicorn's handlers and only gives the
handlers of the `gunicorn.error` and `gunicorn.access` loggers (the names gunicorn documents) the service's formatters.
"""

from __future__ import annotations

import json
import logging

from gunicorn.glogging import Logger

from .logs import JsonFormatter

# config/gunicorn.conf.py's access_log_format writes a JSON object; its fields become the line's own.
ACCESS_LOG_FORMAT = (
    '{"method":"%(m)s","path":"%(U)s","status":%(s)s,"bytes":%(B)s,"duration_us":%(D)s,'
    '"request_id":"%({x-request-id}o)s"}'
)


class AccessJsonFormatter(JsonFormatter):
    """The access line's fields beside ts, level and logger; a line that is not a JSON object stays the msg."""

    def format(self, record: logging.LogRecord) -> str:
        line = json.loads(super().format(record))
        try:
            fields = json.loads(line["msg"])
        except ValueError:  # a path with a quote in it breaks the object: keep the text rather than lose the line
            return json.dumps(line, separators=(",", ":"))
        if isinstance(fields, dict):
            line.pop("msg")
            line = {**line, "msg": "access", **fields}
        return json.dumps(line, default=str, separators=(",", ":"))


class JsonLogger(Logger):
    """gunicorn's Logger with JSON formatters on its handlers."""

    def setup(self, cfg) -> None:
        super().setup(cfg)  # also on SIGHUP: the handlers gunicorn makes anew get the formatters again
        for name, formatter in (("gunicorn.error", JsonFormatter()), ("gunicorn.access", AccessJsonFormatter())):
            for handler in logging.getLogger(name).handlers:
                handler.setFormatter(formatter)
