"""AWS Lambda entry point for gcs-sync: ``lambda_handler``.

Logging follows Lambda's own controls (log format, application log level; ``LOG_LEVEL``
overrides the level) from the moment the container starts, so even a configuration error is
one JSON line. Settings, clients and the first Google token are made once per container, in
Lambda's init phase (this module's import, which Lambda runs at full CPU before the first event;
what fails there is reported by the first event), and shared by every warm invocation after it;
the work itself lives in ``gcs_sync``. What only some events need (the doctor, the audit, a
sync, slicing, a redrive) is imported when such an event arrives.
An error raised to Lambda is the handler's own, of the same type, with its text (and the errors
chained to it) redacted as log lines are.
"""

import gc

# Everything the init phase makes (modules, clients, service models: a few hundred thousand
# objects) lives as long as the container. The cycle collector would scan it again and again while
# it is being built (~40 ms of a cold start, measured in bench/cold_start.py), and then at every
# full collection of every warm invocation: it is off during the init, and what the init made is
# frozen out of its reach afterwards (gc.freeze), even when the init fails.
gc.disable()
try:
    import os

    from gcs_sync import logs
    from gcs_sync.config import LogSettings
    from gcs_sync.handler import Container

    logs.configure_from(LogSettings.from_environ())
    _container = Container(code_dir=os.path.dirname(os.path.abspath(__file__)))
    _container.prepare()
finally:
    gc.freeze()
    gc.enable()


def new_container() -> None:
    """Start again as a new Lambda container would: settings, clients and credentials are built anew
    on the next invocation (the demo, the benchmarks and the tests use it after changing the
    environment)."""
    _container.reset()


def lambda_handler(event, context):
    # Set before anything is logged, for every thread of this invocation.
    logs.set_request_id(getattr(context, "aws_request_id", None))
    try:
        return _container.handle(event, context)
    except Exception as exc:  # noqa: BLE001 - re-raised below, scrubbed
        error = logs.scrubbed(exc)
    # Raised outside the except block, so the original (unscrubbed) error is not chained to it:
    # Lambda reports and logs this one, whose text passed the log lines' redaction.
    raise error
