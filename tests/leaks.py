"""pytest plugin: the no-leak check over the whole session.

Registered from ``tests/conftest.py`` (``pytest_plugins = ["tests.leaks"]``). For the entire
session it collects what the function under test could show anyone:

* log records: every record reaching the root logger, formatted with ``gcs_sync.logs.
  JsonFormatter`` exactly as production formats it, and its raw ``record.getMessage()``
  (a secret in the raw message means the code relied on redaction to hide it);
* what every ``gcs_sync.handler.Container.handle`` returned (JSON-encoded as Lambda would), and
  what left the function raised (type, message, traceback with the chained causes, and a
  ``CopyFailed``'s summary): as ``lambda_function.lambda_handler`` raised it (after its
  scrubbing), or as ``Container.handle`` raised it when a test called the container directly;
* process output: what subprocesses wrote to pipes (``subprocess.Popen.communicate``, hence
  ``subprocess.run`` / ``check_output`` with captured output; output sent to files or inherited
  descriptors is not seen), and each test's captured stdout / stderr / log text and failure
  report (when pytest's capture is on; with ``-s`` the terminal output is not seen).

At ``pytest_sessionfinish`` it searches all of it for every secret the rig knows: the rig's AWS
secret key and session token (``tests/rig/s3.py``), and everything each ``GoogleTokenServer``
recorded in ``secrets_seen`` (federated and access tokens it issued, ``Signature=`` values of
the subject tokens it verified) — each as it is, URL-encoded (``quote``, as Google's subject
token carries the session token, and ``quote_plus``, as a form field does) and JSON-escaped.
A secret found is printed in redacted form (first 4 characters)
with where it was found, and the session fails. The last line is always
``leak check: N log lines, M payloads scanned, K secrets known, F found``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import traceback
from urllib.parse import quote, quote_plus
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import pytest

__all__ = ["Leak", "LeakCheck", "add_secret", "encoded_forms", "find_leaks", "redacted"]

MIN_SECRET_LENGTH = 8  # shorter values would match by accident


@dataclass(frozen=True)
class Leak:
    label: str  # what kind of secret
    shown: str  # its redacted form
    where: str  # which captured text held it


def redacted(secret: str) -> str:
    return f"{secret[:4]}… ({len(secret)} chars)"


def find_leaks(texts: Iterable[tuple[str, str]], secrets: Mapping[str, str]) -> list[Leak]:
    """Every (secret, text) pair where the secret occurs; ``texts`` are (where, text) pairs,
    ``secrets`` maps each secret to a label saying what it is."""
    items = [(where, text) for where, text in texts if text]
    wanted = {s: label for s, label in secrets.items() if s and len(s) >= MIN_SECRET_LENGTH}
    if not items or not wanted:
        return []
    joined = "\x00".join(text for _, text in items)  # one C-speed search per secret
    leaks = []
    for secret, label in wanted.items():
        if secret not in joined:
            continue
        leaks.extend(Leak(label, redacted(secret), where) for where, text in items if secret in text)
    return leaks


def encoded_forms(secrets: Mapping[str, str]) -> dict[str, str]:
    """``secrets`` (secret -> label) with every other form each may take in text: URL-encoded
    (``quote`` with nothing kept, ``quote`` keeping ``/``), form-encoded (``quote_plus``) and
    JSON-escaped, each labelled with its form. Written here, apart from the code under test, so a
    mistake in its redaction cannot hide itself."""
    forms: dict[str, str] = {}
    for secret, label in secrets.items():
        forms.setdefault(secret, label)
        for form, how in ((quote(secret, safe=""), "URL-encoded"), (quote(secret), "URL-encoded, / kept"),
                          (quote_plus(secret), "form-encoded"), (json.dumps(secret)[1:-1], "JSON-escaped"),
                          (json.dumps(secret)[1:-1].replace("/", "\\/"), "JSON-escaped, / escaped")):
            forms.setdefault(form, f"{label} ({how})")
    return forms


def _classify(secret: str) -> str:
    if secret.startswith("ya29."):
        return "Google access token"
    if len(secret) == 64 and all(c in "0123456789abcdef" for c in secret):
        return "SigV4 signature of a subject token"
    return "federated (STS) token"


@dataclass
class LeakCheck:
    logs: list[tuple[str, str]] = field(default_factory=list)
    payloads: list[tuple[str, str]] = field(default_factory=list)
    token_servers: list[Any] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)  # secrets tests made up (add_secret)
    log_records: int = 0
    current: str = "session"
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_log(self, where: str, formatted: str, raw: str) -> None:
        with self._lock:
            self.log_records += 1
            self.logs.append((f"log line (formatted) {where} during {self.current}", formatted))
            self.logs.append((f"log message (raw getMessage) {where} during {self.current}", raw))

    def add_payload(self, where: str, text: str) -> None:
        with self._lock:
            self.payloads.append((f"{where} during {self.current}", text))

    def secrets(self) -> dict[str, str]:
        from tests.rig.s3 import AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN

        known = {AWS_SECRET_ACCESS_KEY: "rig AWS secret access key", AWS_SESSION_TOKEN: "rig AWS session token"}
        with self._lock:
            known.update(self.extra)
        for server in self.token_servers:
            lock = getattr(server, "_lock", None)
            with lock or threading.Lock():
                seen = set(getattr(server, "secrets_seen", ()))
            for secret in seen:
                known.setdefault(secret, _classify(secret))
        return known

    def scan(self) -> list[Leak]:
        with self._lock:
            texts = list(self.logs) + list(self.payloads)
        return find_leaks(texts, encoded_forms(self.secrets()))


_CHECK = LeakCheck()


def add_secret(secret: str, label: str) -> None:
    """A secret a test made up (e.g. a session token of its own): searched for like the rig's."""
    with _CHECK._lock:
        _CHECK.extra.setdefault(secret, label)

_ORIGINALS: dict[str, Any] = {}
_entry = threading.local()  # .depth > 0: inside lambda_function.lambda_handler, which records raises


class _CaptureHandler(logging.Handler):
    """Root-logger handler formatting every record as production does (its own formatter, so
    ``logs.configure`` resetting handler formatters does not matter)."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        from gcs_sync.logs import JsonFormatter

        self._json = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            formatted = self._json.format(record)
        except Exception as exc:  # noqa: BLE001 - never break the code under test
            formatted = f"<record not formattable: {type(exc).__name__}>"
        try:
            raw = record.getMessage()
        except Exception:  # noqa: BLE001
            raw = str(record.msg)
        _CHECK.add_log(f"[{record.name}]", formatted, raw)


def _describe_exception(exc: BaseException) -> str:
    parts = [f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc))]
    summary = getattr(exc, "summary", None)
    if summary is not None:
        parts.append(json.dumps(summary, default=str, ensure_ascii=False))
    return "\n".join(parts)


def _install() -> None:
    import gcs_sync.handler
    from tests.rig.google_tokens import GoogleTokenServer

    handler = _CaptureHandler()
    logging.getLogger().addHandler(handler)
    _ORIGINALS["log_handler"] = handler

    original_handle = gcs_sync.handler.Container.handle

    def handle(self: Any, event: Any, context: Any) -> Any:
        try:
            result = original_handle(self, event, context)
        except BaseException as exc:
            if not getattr(_entry, "depth", 0):  # else lambda_handler records what it raises
                _CHECK.add_payload("Container.handle raised", _describe_exception(exc))
            raise
        try:
            text = json.dumps(result, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(result)
        _CHECK.add_payload("lambda_handler returned", text)
        return result

    gcs_sync.handler.Container.handle = handle
    _ORIGINALS["handle"] = original_handle

    original_init = GoogleTokenServer.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        _CHECK.token_servers.append(self)

    GoogleTokenServer.__init__ = init  # type: ignore[method-assign]
    _ORIGINALS["token_init"] = original_init

    original_communicate = subprocess.Popen.communicate

    def communicate(self: subprocess.Popen, *args: Any, **kwargs: Any) -> Any:
        out, err = original_communicate(self, *args, **kwargs)
        command = self.args if isinstance(self.args, str) else " ".join(map(str, self.args[:3]))
        for stream, data in (("stdout", out), ("stderr", err)):
            if data:
                text = data if isinstance(data, str) else data.decode("utf-8", "replace")
                _CHECK.add_payload(f"subprocess {stream} of `{command[:80]}`", text)
        return out, err

    subprocess.Popen.communicate = communicate  # type: ignore[method-assign]
    _ORIGINALS["communicate"] = original_communicate


def _wrap_lambda_handler() -> None:
    """Record what ``lambda_function.lambda_handler`` raises, once a test has imported it."""
    module = sys.modules.get("lambda_function")
    if module is None or "lambda_handler" in _ORIGINALS:
        return
    original = module.lambda_handler

    def lambda_handler(event: Any, context: Any) -> Any:
        _entry.depth = getattr(_entry, "depth", 0) + 1
        try:
            return original(event, context)
        except BaseException as exc:
            _CHECK.add_payload("lambda_handler raised", _describe_exception(exc))
            raise
        finally:
            _entry.depth -= 1

    module.lambda_handler = lambda_handler
    _ORIGINALS["lambda_handler"] = (module, original)


def _uninstall() -> None:
    import gcs_sync.handler
    from tests.rig.google_tokens import GoogleTokenServer

    if "log_handler" in _ORIGINALS:
        logging.getLogger().removeHandler(_ORIGINALS.pop("log_handler"))
    if "handle" in _ORIGINALS:
        gcs_sync.handler.Container.handle = _ORIGINALS.pop("handle")
    if "lambda_handler" in _ORIGINALS:
        module, original = _ORIGINALS.pop("lambda_handler")
        module.lambda_handler = original
    if "token_init" in _ORIGINALS:
        GoogleTokenServer.__init__ = _ORIGINALS.pop("token_init")  # type: ignore[method-assign]
    if "communicate" in _ORIGINALS:
        subprocess.Popen.communicate = _ORIGINALS.pop("communicate")  # type: ignore[method-assign]


# -- hooks ------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    if not _ORIGINALS:
        _install()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: Any) -> Any:
    _wrap_lambda_handler()
    _CHECK.current = item.nodeid
    try:
        return (yield)
    finally:
        _CHECK.current = "session"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # The teardown report carries the output captured in every phase of the test.
    if report.when == "teardown":
        for name, text in (("stdout", report.capstdout), ("stderr", report.capstderr), ("log", report.caplog)):
            if text:
                _CHECK.add_payload(f"captured {name} of {report.nodeid}", text)
    if report.failed and report.longreprtext:
        _CHECK.add_payload(f"failure report of {report.nodeid} ({report.when})", report.longreprtext)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaks = _CHECK.scan()
    known = len(_CHECK.secrets())
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")

    def say(line: str, **markup: bool) -> None:
        if reporter is not None:
            reporter.write_line(line, **markup)
        else:
            print(line)

    say("")
    for leak in leaks[:50]:
        say(f"LEAK: {leak.label} {leak.shown} found in {leak.where}", red=True, bold=True)
    if len(leaks) > 50:
        say(f"LEAK: ... and {len(leaks) - 50} more", red=True, bold=True)
    say(f"leak check: {_CHECK.log_records} log lines, {len(_CHECK.payloads)} payloads scanned, "
        f"{known} secrets known, {len(leaks)} found", red=bool(leaks), green=not leaks)
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    _uninstall()
