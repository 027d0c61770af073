"""The shared HTTP session every connector uses: rate buckets, retries and venue error rules.

Venues punish clients that learn their limits by hitting them (Binance turns a
second 429 into an HTTP 418 IP ban), so the session stays *under* the limit:
a client-side sliding-window bucket (requests-ratelimiter / pyrate-limiter)
sized to a share of the venue's published rate, weight-aware for venues that
count request weight, plus the venue's own usage header (Binance
``X-MBX-USED-WEIGHT-1M``) to pause before the window fills when other clients
share the IP. Faults that retrying fixes (429 with ``Retry-After``, 5xx,
timeouts, dropped connections, Kraken's ``EAPI:Rate limit exceeded`` inside a
200 body) are retried with exponential backoff and jitter; everything else
becomes a one-line ``ConnectorError``.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from typing import Any

import orjson
import requests
from pyrate_limiter import InMemoryBucket, Limiter, Rate
from requests_ratelimiter import LimiterSession

from schemahub_core.framework.config import ConfigError, option_problem
from schemahub_core.framework.connector import ConnectorError, VenueUnreachable

log = logging.getLogger(__name__)

__all__ = ["JSONArray", "JSONNumber", "RateLimit", "RetryableError", "VenuePolicy", "VenueSession", "dumps_exact",
           "split_json_array", "venue_session"]


class JSONNumber(str):
    """A JSON number kept as its exact decimal text (``VenuePolicy(parse_float=JSONNumber)``).

    It reads as the ``str`` it is (exact casts, no float rounding), and ``dumps_exact`` writes it back
    as a number, so ``_raw_payload`` keeps the venue's original JSON rather than a quoted string.
    """


def dumps_exact(value: Any) -> str:
    """Compact JSON of parsed venue data, with ``JSONNumber`` written back unquoted, as the venue sent it."""
    if isinstance(value, JSONNumber):
        return str.__str__(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps_exact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps_exact(v) for v in value) + "]"
    return json.dumps(value)


class JSONArray(list):
    """A parsed top-level JSON array that keeps each element's exact text as the venue sent it (``texts``).

    ``get_json(..., texts=True)`` returns one: a connector then keeps a record's original JSON (its
    ``_raw_payload``) without serializing every record again, which cost more than parsing the page.
    """

    texts: list[str]


_WHITESPACE = re.compile(r"[ \t\n\r]*")


def split_json_array(text: str, parse_float: Callable[[str], Any] | None = None) -> JSONArray | None:
    """``text`` parsed, when it is a JSON array, as a ``JSONArray``; None when it is another value.

    ``ValueError`` for malformed JSON, as ``json.loads`` raises it. Parsed by orjson (a 1,000-row Binance page in
    0.4 ms against json's 1.0) unless ``parse_float`` asks for json's hook; what orjson refuses and json reads
    (NaN, integers past 64 bits, lone surrogates) goes to json, so the result is json's.
    """
    items = _loads(text, parse_float)
    if not isinstance(items, list):
        return None
    out = JSONArray(items)
    out.texts = _flat_object_texts(text, items) or _element_texts(text, parse_float)
    return out


def _loads(text: str, parse_float: Callable[[str], Any] | None) -> Any:
    if parse_float is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text, parse_float=parse_float)


def _flat_object_texts(text: str, items: list) -> list[str] | None:
    """The texts of a compact array of flat objects (a venue's page of records), cut with string methods.

    When every item is an object and the text holds exactly one ``{`` and one ``}`` per item, no brace is inside
    a string or a nested value, so ``},{`` occurs exactly between two items; any other text (spaces between the
    items, nested objects, braces in strings) does not split into one piece per item and returns None.
    """
    body = text.strip()
    count = len(items)
    if not count or not (body.startswith("[{") and body.endswith("}]")) or set(map(type, items)) != {dict} \
            or body.count("{") != count or body.count("}") != count:
        return None
    pieces = body[2:-2].split("},{")
    return ["{" + piece + "}" for piece in pieces] if len(pieces) == count else None


def _element_texts(text: str, parse_float: Callable[[str], Any] | None) -> list[str]:
    """Each element's exact text of the JSON array ``text``, any JSON, through the decoder's own scanner."""
    skip = _WHITESPACE.match
    i = skip(text, skip(text).end() + 1).end()  # past the '['
    texts: list[str] = []
    if text[i:i + 1] == "]":
        return texts
    decode = json.JSONDecoder(parse_float=parse_float).raw_decode
    while True:
        _, end = decode(text, i)
        texts.append(text[i:end])
        i = skip(text, end).end()
        if text[i:i + 1] != ",":
            return texts  # the ']': json.loads checked the whole text
        i = skip(text, i + 1).end()


class RetryableError(Exception):
    """A venue said "try again later" in a way HTTP status codes do not show (e.g. in a 200 body)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RateLimit:
    """A venue's published limit: ``limit`` request weight per ``window`` seconds."""

    limit: int
    window: float

    @classmethod
    def parse(cls, text: str | RateLimit) -> RateLimit:
        """``"6000/60"`` (weight per seconds) or ``"10/1s"``; the form used in config and env."""
        if isinstance(text, RateLimit):
            return text
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*s?\s*", str(text))
        if not match:
            raise ValueError(f"rate limit {text!r}: expected LIMIT/SECONDS, e.g. 6000/60")
        return cls(int(match.group(1)), float(match.group(2)))

    @property
    def per_second(self) -> float:
        return self.limit / self.window


BodyCheck = Callable[[requests.Response, Any], None]


@dataclass(frozen=True)
class VenuePolicy:
    """How to talk to one venue. Connectors build one from their defaults and options.

    ``rate`` is the venue's limit; the client allows itself ``headroom`` of it
    (network jitter shifts request arrivals, so 100 % would sometimes overshoot).
    ``used_weight_header`` names a response header carrying the weight already
    used in the venue's current fixed window (Binance); the session then waits
    for the next window rather than cross ``header_headroom`` of the limit.
    ``check_body`` inspects a parsed 200 body and raises ``RetryableError`` or
    ``ConnectorError`` for errors the venue reports there (Kraken).
    """

    name: str
    rate: RateLimit
    headroom: float = 0.9
    used_weight_header: str | None = None
    header_headroom: float = 0.95
    timeout: float = 10.0
    max_retries: int = 6
    backoff: float = 0.5
    max_backoff: float = 30.0
    parse_float: Callable[[str], Any] | None = None
    check_body: BodyCheck | None = None
    error_message: Callable[[Any], str | None] | None = None

    def with_options(self, options: Mapping[str, Any]) -> VenuePolicy:
        """Apply connector options (config or ``SCHEMAHUB_<VENUE>_*`` env): rate_limit, timeout, max_retries,
        backoff, max_backoff, headroom. A bad value is a ``ConfigError`` naming the option."""
        changes: dict[str, Any] = {}
        readers: dict[str, Callable[[Any], Any]] = {"rate_limit": RateLimit.parse, "timeout": _positive,
                                                    "backoff": _seconds, "max_backoff": _seconds,
                                                    "headroom": _fraction, "max_retries": _count}
        for key, read in readers.items():
            value = options.get(key)
            if value is None or value == "":
                continue
            try:
                changes["rate" if key == "rate_limit" else key] = read(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(option_problem(self.name, key, value, exc)) from None
        return replace(self, **changes)


def _positive(value: Any) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be a number of seconds above 0")
    return number


def _seconds(value: Any) -> float:
    number = float(value)
    if number < 0:
        raise ValueError("must be a number of seconds, 0 or more")
    return number


def _fraction(value: Any) -> float:
    number = float(value)
    if not 0 < number <= 1:
        raise ValueError("must be in (0, 1]")
    return number


def _count(value: Any) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be 0 or more")
    return number


def _unreachable(exc: BaseException) -> str | None:
    """Why nothing answers at the address (refused, unknown host), or None for faults a retry may fix."""
    text = str(exc)
    for marker, why in (("Connection refused", "connection refused"), ("Name or service not known", "unknown host"),
                        ("nodename nor servname", "unknown host"), ("Temporary failure in name resolution",
                                                                    "no DNS: is the network up?")):
        if marker in text:
            return why
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        seen = seen.__cause__ or seen.__context__
    return None


@dataclass
class SessionStats:
    """What the session did, for tests, logs and benchmarks."""

    requests: int = 0
    weight: int = 0
    retries: int = 0
    rate_limited: int = 0  # 429 / 418 / body rate-limit answers received
    waited: float = 0.0  # seconds spent pausing before the venue's window filled
    by_status: dict[int, int] = field(default_factory=dict)


_LIMITERS: dict[tuple[str, int, int], Limiter] = {}
_LIMITERS_LOCK = threading.Lock()
# The venue's latest word on the weight used in its window, per venue: it counts the whole IP, so every
# session in the process reads it. (used weight, when seen)
_USED_WEIGHT: dict[str, tuple[int, float]] = {}


def _shared_limiter(name: str, limit: int, window_ms: int) -> Limiter:
    """One bucket per venue and rate in the process, so every connector instance shares the venue's budget."""
    with _LIMITERS_LOCK:
        key = (name, limit, window_ms)
        if key not in _LIMITERS:
            _LIMITERS[key] = Limiter(InMemoryBucket([Rate(limit, window_ms)]), buffer_ms=10)
        return _LIMITERS[key]


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class VenueSession(LimiterSession):
    """A ``requests`` session with one venue's rate bucket, retry rules and error reading."""

    def __init__(self, policy: VenuePolicy, headers: Mapping[str, str] | None = None) -> None:
        # The bucket holds ``limit`` weight per window stretched by 1/headroom: for a 1 req/s venue
        # that is 1 request per 1.11 s, where shrinking the limit instead would round to zero.
        window_ms = max(1, round(policy.rate.window * 1000 / policy.headroom))
        limiter = _shared_limiter(policy.name, policy.rate.limit, window_ms)
        super().__init__(limiter=limiter, per_host=False, bucket_name=policy.name, limit_statuses=(429, 418))
        self.policy = policy
        self.stats = SessionStats()
        self._proxies_by_host: dict[tuple[str, str], dict[str, str]] = {}
        self.headers["User-Agent"] = "schemahub"
        self.headers.update(headers or {})

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        """Take ``request.weight`` (default 1) from the bucket, then send."""
        weight = int(getattr(request, "weight", 1))
        self.limiter.try_acquire(self._bucket_name(request), weight=weight, blocking=True)
        if "proxies" not in kwargs and request.url:
            kwargs["proxies"] = self._proxies(request)
        return requests.Session.send(self, request, **kwargs)

    def _proxies(self, request: requests.PreparedRequest) -> dict[str, str]:
        """The proxies for the request's host, read from the environment once per host and session: requests
        reads them on every send, scanning the environment three times (0.26 ms, a quarter of a page's cost)."""
        parts = requests.utils.urlparse(request.url)
        key = (parts.scheme, parts.netloc)
        if key not in self._proxies_by_host:
            self._proxies_by_host[key] = requests.utils.resolve_proxies(request, self.proxies, self.trust_env)
        return self._proxies_by_host[key]

    def _pause_before_window_fills(self, weight: int) -> None:
        """Binance-style: the venue told us the weight used in its current window; wait if we would cross it."""
        if self.policy.name not in _USED_WEIGHT:
            return
        used, seen = _USED_WEIGHT[self.policy.name]
        window = self.policy.rate.window
        now = time.time()
        if int(now // window) != int(seen // window):
            return  # a new window started since the venue last reported
        if used + weight <= self.policy.rate.limit * self.policy.header_headroom:
            return
        pause = (int(now // window) + 1) * window - now + 0.05
        log.info("%s: %d/%d weight used in this window; pausing %.2fs", self.policy.name, used,
                 self.policy.rate.limit, pause)
        self.stats.waited += pause
        time.sleep(pause)

    def _note_used_weight(self, response: requests.Response) -> None:
        header = self.policy.used_weight_header
        if header and response.headers.get(header, "").isdigit():
            _USED_WEIGHT[self.policy.name] = (int(response.headers[header]), time.time())

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after + random.uniform(0, 0.1)
        cap = min(self.policy.max_backoff, self.policy.backoff * 2**attempt)
        return cap / 2 + random.uniform(0, cap / 2)  # "equal jitter": never zero, never synchronized

    def _describe(self, response: requests.Response, body: Any) -> str:
        message = self.policy.error_message(body) if self.policy.error_message and body is not None else None
        text = message or (response.text[:200].strip() if response.text else response.reason)
        path = requests.utils.urlparse(response.url).path
        return f"{self.policy.name}: HTTP {response.status_code} on {path}: {text}"

    def get_json(
        self, url: str, params: Mapping[str, Any] | None = None, weight: int = 1, texts: bool = False
    ) -> tuple[Any, requests.Response]:
        """GET ``url`` and return (parsed JSON, response), retrying what retrying can fix.

        With ``texts``, a JSON array comes back as a ``JSONArray``: each element's original text beside it.

        Raises ``ConnectorError`` with one line naming the venue, the path and
        the venue's own message when the venue refuses the request, or when
        retries are exhausted.
        """
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        last_problem = ""
        for attempt in range(self.policy.max_retries + 1):
            if attempt:
                self.stats.retries += 1
            self._pause_before_window_fills(weight)
            request = self.prepare_request(requests.Request("GET", url, params=clean))
            request.weight = weight  # type: ignore[attr-defined]  # read by send()
            try:
                response = self.send(request, timeout=self.policy.timeout)
            except (requests.Timeout, requests.ConnectionError) as exc:
                why = None if isinstance(exc, requests.Timeout) else _unreachable(exc)
                if why is not None:  # nothing listens there: retrying for minutes would only hide it
                    parts = requests.utils.urlparse(url)
                    raise VenueUnreachable(
                        f"{self.policy.name}: cannot reach {parts.scheme}://{parts.netloc} ({why}): is the venue (or "
                        f"`schemahub sandbox`) running there? Check SCHEMAHUB_{self.policy.name.upper()}_BASE_URL or "
                        f"connectors.{self.policy.name}.base_url") from None
                last_problem = f"{type(exc).__name__}: {exc}"
                self._sleep(attempt, None, last_problem)
                continue
            self.stats.requests += 1
            self.stats.weight += weight
            self.stats.by_status[response.status_code] = self.stats.by_status.get(response.status_code, 0) + 1
            self._note_used_weight(response)
            body = self._parse(response, texts)
            status = response.status_code
            if status == 418:
                self.stats.rate_limited += 1
                raise ConnectorError(f"{self._describe(response, body)} (IP banned by the venue; "
                                     f"retry after {_retry_after(response) or 'an unknown delay'} s)")
            if status == 429 or status >= 500:
                self.stats.rate_limited += status == 429
                last_problem = self._describe(response, body)
                self._sleep(attempt, _retry_after(response), last_problem)
                continue
            if status >= 400:
                raise ConnectorError(self._describe(response, body))
            if body is _MALFORMED:
                last_problem = f"{self.policy.name}: malformed JSON from {response.url}: {response.text[:80]!r}"
                self._sleep(attempt, None, last_problem)
                continue
            if self.policy.check_body is not None:
                try:
                    self.policy.check_body(response, body)
                except RetryableError as exc:
                    self.stats.rate_limited += 1
                    last_problem = f"{self.policy.name}: {exc}"
                    self._sleep(attempt, exc.retry_after, last_problem)
                    continue
            return body, response
        raise ConnectorError(f"{last_problem} (gave up after {self.policy.max_retries} retries)", retryable=True)

    def _sleep(self, attempt: int, retry_after: float | None, problem: str) -> None:
        if attempt >= self.policy.max_retries:
            return
        delay = self._backoff(attempt, retry_after)
        log.warning("%s; retrying in %.2fs", problem, delay)
        time.sleep(delay)

    def _parse(self, response: requests.Response, texts: bool = False) -> Any:
        if not response.content:
            return None
        try:
            if texts and response.status_code < 300 and (text := _utf8(response.content)) is not None:
                array = split_json_array(text, self.policy.parse_float)
                if array is not None:
                    return array
            return json.loads(response.content, parse_float=self.policy.parse_float)
        except ValueError:
            return _MALFORMED


_MALFORMED: Any = object()


def _utf8(content: bytes) -> str | None:
    """The body as text when it is UTF-8 (as JSON over HTTP is); None leaves the rarer encodings to json.loads."""
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return None


def venue_session(policy: VenuePolicy, options: Mapping[str, Any] | None = None,
                  headers: Mapping[str, str] | None = None) -> VenueSession:
    """The session a connector uses: its venue defaults, overridden by the connector's options."""
    return VenueSession(policy.with_options(options or {}), headers)
