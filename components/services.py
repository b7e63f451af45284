"""Can a command reach the services it needs? Asked when it starts, and again when it crashes.

A command declares what it talks to (`svp` does, per command): the MLflow tracking server (and
registry, when `MLFLOW_REGISTRY_URI` names another), the Prefect API when `PREFECT_API_URL` names
one, a Ray cluster when `RAY_ADDRESS` names one. The embedded defaults (SQLite, Prefect's
temporary API, Ray's local mode) need no check. Each probe waits at most `SVP_SERVICE_TIMEOUT_S`
seconds (default 5), so a server that is down costs seconds, not MLflow's minutes of retries, and
ends in one line naming the service, its address and the variable that set it.

A service lost mid-stage surfaces as whatever its client raises; `svp` then probes again and, if
one is down, says so in the same one line (`lost_service`). Training keeps its checkpoints and
its MLflow run id, so a rerun after the service returns resumes and logs to the same run.
"""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

from components.errors import SvpError

TIMEOUT_VARIABLE = "SVP_SERVICE_TIMEOUT_S"


class ServiceUnavailable(SvpError):
    """A service the command needs does not answer. Unlike bad input, a retry may help."""


@dataclass(frozen=True)
class Service:
    name: str  # as a person says it: "MLflow tracking server"
    address: str
    variable: str  # the environment variable that named it
    health_path: str | None  # an HTTP path that answers 200 when up; None: a TCP connect

    def problem(self, timeout_s: float) -> str | None:
        """None if it answers within `timeout_s`, else what went wrong, in a few words."""
        if self.health_path is None:
            host, port = _host_port(self.address)
            try:
                socket.create_connection((host, port), timeout=timeout_s).close()
            except OSError as err:
                return _reason(err)
            return None
        url = self.address.rstrip("/") + self.health_path
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as answer:
                return None if answer.status < 500 else f"HTTP {answer.status}"
        except urllib.error.HTTPError as err:
            return None if err.code < 500 else f"HTTP {err.code}"
        except (urllib.error.URLError, OSError, ValueError) as err:
            return _reason(getattr(err, "reason", err))

    def unavailable(self, reason: str, timeout_s: float, during: bool = False) -> str:
        when = "was lost during the command" if during else "is not reachable"
        advice = ("start it (or point the variable elsewhere) and rerun: training resumes from "
                  "its last checkpoint in the same run" if during else
                  f"start it, or unset {self.variable} to use the embedded default")
        return (f"{self.name} at {self.address} (set by {self.variable}) {when}: {reason} "
                f"(waited up to {timeout_s:g} s); {advice}")


def _reason(err: object) -> str:
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    if isinstance(err, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(err, socket.gaierror):
        return "unknown host"
    text = " ".join(str(err).split())
    return text[:120] or type(err).__name__


def _host_port(address: str) -> tuple[str, int]:
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    return parts.hostname or "127.0.0.1", parts.port or 6379


def timeout_s() -> float:
    raw = os.environ.get(TIMEOUT_VARIABLE, "5")
    try:
        value = float(raw)
    except ValueError:
        raise SvpError(f"{TIMEOUT_VARIABLE}={raw!r}: not a number of seconds") from None
    if not value > 0:
        raise SvpError(f"{TIMEOUT_VARIABLE}={raw!r}: must be above 0")
    return value


def _is_http(uri: str) -> bool:
    return urlsplit(uri).scheme in ("http", "https")


def named_services(needs: tuple[str, ...]) -> list[Service]:
    """The servers among `needs` ("mlflow", "prefect", "ray") that a variable names."""
    found = []
    if "mlflow" in needs:
        tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
        if _is_http(tracking):
            found.append(Service("MLflow tracking server", tracking, "MLFLOW_TRACKING_URI",
                                 "/health"))
        registry = os.environ.get("MLFLOW_REGISTRY_URI", "")
        if _is_http(registry) and registry != tracking:
            found.append(Service("MLflow registry server", registry, "MLFLOW_REGISTRY_URI",
                                 "/health"))
    if "prefect" in needs and (api := os.environ.get("PREFECT_API_URL")):
        found.append(Service("Prefect API", api, "PREFECT_API_URL", "/health"))
    ray = os.environ.get("RAY_ADDRESS", "")
    if "ray" in needs and ray and ray not in ("auto", "local"):
        found.append(Service("Ray cluster", ray, "RAY_ADDRESS", None))
    return found


def check_services(needs: tuple[str, ...]) -> None:
    """Raise `ServiceUnavailable` (one line) for the first named service that does not answer."""
    wait = timeout_s()
    for service in named_services(needs):
        if (reason := service.problem(wait)) is not None:
            raise ServiceUnavailable(service.unavailable(reason, wait))


def lost_service(needs: tuple[str, ...]) -> ServiceUnavailable | None:
    """After a crash: the first named service that is down now, as the one-line error to show."""
    wait = timeout_s()
    for service in named_services(needs):
        if (reason := service.problem(wait)) is not None:
            return ServiceUnavailable(service.unavailable(reason, wait, during=True))
    return None
