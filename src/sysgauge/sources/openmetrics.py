"""Prometheus / OpenMetrics endpoints (dcgm-exporter, node_exporter, ...), scraped and re-emitted.

Each endpoint is scraped by its own thread on its own schedule, so a slow or hung endpoint never delays
the sampler's tick; a tick takes the latest complete scrape of each endpoint. Reading (`_http.fetch`) is
apart from parsing (`parse_scrape`, prometheus_client's parsers) and shaping (`to_readings`, pure).
Semantics of names, types and filters: docs/openmetrics.md.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sysgauge._logonce import LogOnce
from sysgauge.metrics import Aggregation, InstrumentKind, MetricSpec
from sysgauge.sources.base import Attributes, Reading

_logger = logging.getLogger("sysgauge")

ENDPOINT_ATTRIBUTE = "sysgauge.endpoint"
SOURCE = "openmetrics"
_RETRY_DELAYS = (0.25, 1.0)  # bounded: two retries, only for failures a retry can fix
_OTEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-/]{0,254}")

Fetch = Callable[[str, Mapping[str, str], float, int], Any]


@dataclass(frozen=True)
class Sample:
    """One re-emittable value: the name it is emitted under, its kind, labels and value."""

    name: str
    counter: bool
    labels: tuple[tuple[str, str], ...]
    value: float
    unit: str = ""
    help: str = ""
    exposed: str = ""  # the name in the scraped text (a counter's `x_total`), also matched by filters


def _fetch(url: str, headers: Mapping[str, str], timeout: float, max_bytes: int) -> Any:
    from sysgauge.sources._http import fetch

    return fetch(url, headers, timeout, max_bytes)


# --- parsing (pure) ------------------------------------------------------------------------------


# prometheus_client's label parser takes time quadratic in the length of a line (a label value of escaped
# quotes: 0.2 MB parses in 0.16 s, 0.8 MB in 2 s, so a body at the 10 MB cap would take minutes of CPU).
# Dropping longer lines before parsing keeps a scrape's parse time linear in its size (docs/openmetrics.md);
# real exposition lines are far shorter.
MAX_LINE_CHARS = 65_536


def parse_scrape(text: str, content_type: str) -> tuple[list[Any], int]:
    """The families of a scraped body, and how many lines over MAX_LINE_CHARS were dropped unparsed."""
    dropped = 0
    if len(text) > MAX_LINE_CHARS:
        lines = text.split("\n")
        kept = [line for line in lines if len(line) <= MAX_LINE_CHARS]
        dropped = len(lines) - len(kept)
        if dropped:
            text = "\n".join(kept)
    return parse_families(text, content_type), dropped


def parse_families(text: str, content_type: str) -> list[Any]:
    """prometheus_client's parser for the format the endpoint said it sent. Raises ValueError on garbage."""
    # Imported here: only users with endpoints pay for prometheus_client.
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
    from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

    parser = (
        parse_openmetrics if content_type.startswith("application/openmetrics-text") else parse_prometheus
    )
    try:
        return list(parser(text))
    except Exception as exc:  # the parsers raise ValueError, IndexError, TypeError... on bad text
        raise ValueError(f"unparseable exposition text: {type(exc).__name__}: {exc}") from None


def samples_of(families: Iterable[Any]) -> list[Sample]:
    """Families -> the samples we re-emit, named and typed as docs/openmetrics.md describes."""
    out: list[Sample] = []
    for family in families:
        kind = family.type
        unit = getattr(family, "unit", "") or ""
        if len(unit) > 63 or not unit.isascii():
            unit = ""  # the SDK refuses such units (and would drop the instrument): keep the values
        for sample in family.samples:
            name = sample.name
            if name.endswith("_created"):
                continue  # creation timestamps, not measurements
            if kind == "counter":
                counter = True
                name = family.name  # OTel counter name; Prometheus exporters add _total back
            elif kind in ("histogram", "summary"):
                counter = name != family.name  # _bucket, _count, _sum are cumulative; quantiles are not
            else:
                counter = False  # gauge, untyped/unknown, info, stateset, gaugehistogram
            value = float(sample.value)
            if not math.isfinite(value):
                continue
            labels = tuple(sorted((str(k), str(v)) for k, v in sample.labels.items()))
            emitted = name.replace(":", "_")
            out.append(Sample(emitted, counter, labels, value, unit, family.documentation or "", sample.name))
    return out


# --- filtering -----------------------------------------------------------------------------------


class MetricFilter:
    """Both of wandb's forms, with full-match regexes against `<endpoint>.<metric>`, where <metric> is the
    emitted name or the name in the scraped text (`node_cpu_seconds_total` and `node_cpu_seconds` both work).

    - a list: keep a sample whose `<endpoint>.<metric>` full-matches any regex;
    - a mapping {name regex: {label: value regex}}: keep it when, for any entry, the name full-matches and
      every listed label is present and its value full-matches (a missing label fails that entry).
    - empty: keep everything.
    """

    def __init__(self, filters: Sequence[str] | Mapping[str, Mapping[str, str]]) -> None:
        self._names: list[re.Pattern[str]] = []
        self._entries: list[tuple[re.Pattern[str], list[tuple[str, re.Pattern[str]]]]] = []
        if isinstance(filters, Mapping):
            for pattern, labels in filters.items():
                self._entries.append((re.compile(pattern), [(k, re.compile(v)) for k, v in labels.items()]))
        else:
            self._names = [re.compile(pattern) for pattern in filters]
        self._everything = not self._names and not self._entries
        self._name_cache: dict[str, bool] = {}

    def keeps(self, endpoint: str, sample: Sample) -> bool:
        if self._everything:
            return True
        names = [f"{endpoint}.{sample.name}"]
        if sample.exposed and sample.exposed != sample.name:
            names.append(f"{endpoint}.{sample.exposed}")
        if self._names:
            key = names[-1]
            kept = self._name_cache.get(key)
            if kept is None:
                kept = any(p.fullmatch(n) for p in self._names for n in names)
                if len(self._name_cache) < 10_000:
                    self._name_cache[key] = kept
            return kept
        labels = dict(sample.labels)
        for name_pattern, label_patterns in self._entries:
            if any(name_pattern.fullmatch(n) for n in names) and all(
                key in labels and pattern.fullmatch(labels[key]) for key, pattern in label_patterns
            ):
                return True
        return False


# --- shaping -------------------------------------------------------------------------------------


class SpecRegistry:
    """The dynamic MetricSpecs of scraped metrics: one per name, its kind fixed by the first sighting."""

    def __init__(self) -> None:
        self._specs: dict[str, MetricSpec] = {}
        self._lock = threading.Lock()

    def spec_for(self, sample: Sample) -> MetricSpec | None:
        spec = self._specs.get(sample.name)
        if spec is None:
            kind = InstrumentKind.COUNTER if sample.counter else InstrumentKind.GAUGE
            with self._lock:
                spec = self._specs.setdefault(
                    sample.name,
                    MetricSpec(
                        name=sample.name,
                        kind=kind,
                        unit=sample.unit,
                        description=sample.help[:1000],
                        attributes=(),
                        source=SOURCE,
                        aggregation=Aggregation.LAST if sample.counter else Aggregation.MEAN,
                    ),
                )
        if (spec.kind is InstrumentKind.COUNTER) != sample.counter:
            return None  # two endpoints disagree on the type of one name: the first one wins
        return spec

    def all(self) -> tuple[MetricSpec, ...]:
        with self._lock:
            return tuple(self._specs.values())


class SeriesCap:
    """At most `limit` series per endpoint. Series unseen for `forget_after` scrapes are forgotten, so an
    endpoint whose label values churn keeps admitting new series without growing memory."""

    def __init__(self, limit: int, forget_after: int = 10) -> None:
        self._limit = limit
        self._forget_after = forget_after
        self._last_seen: dict[tuple[str, Attributes], int] = {}
        self._scrape = 0
        self.dropped = 0

    def admit(self, keys: list[tuple[str, Attributes]]) -> list[bool]:
        self._scrape += 1
        self.dropped = 0
        if len(self._last_seen) + len(keys) > self._limit:
            horizon = self._scrape - self._forget_after
            self._last_seen = {k: seen for k, seen in self._last_seen.items() if seen >= horizon}
        admitted = []
        for key in keys:
            if key in self._last_seen or len(self._last_seen) < self._limit:
                self._last_seen[key] = self._scrape
                admitted.append(True)
            else:
                admitted.append(False)
                self.dropped += 1
        return admitted


def to_readings(
    endpoint: str,
    samples: Iterable[Sample],
    keep: MetricFilter,
    registry: SpecRegistry,
    cap: SeriesCap,
) -> list[Reading]:
    chosen: list[tuple[MetricSpec, Attributes, float]] = []
    for sample in samples:
        if not _OTEL_NAME.fullmatch(sample.name) or not keep.keeps(endpoint, sample):
            continue
        spec = registry.spec_for(sample)
        if spec is None:
            continue
        attributes: Attributes = ((ENDPOINT_ATTRIBUTE, endpoint), *sample.labels)
        chosen.append((spec, attributes, sample.value))
    admitted = cap.admit([(spec.name, attrs) for spec, attrs, _ in chosen])
    return [
        Reading(spec, value, attrs) for (spec, attrs, value), ok in zip(chosen, admitted, strict=True) if ok
    ]


# --- reading: one scraper thread per endpoint ----------------------------------------------------


class _Scraper:
    def __init__(self, source: OpenMetricsSource, name: str, url: str, headers: Mapping[str, str]) -> None:
        self.name = name
        self.url = url
        self._headers = dict(headers)
        self._source = source
        self._cap = SeriesCap(source.max_series)
        self.latest: tuple[float, list[Reading]] | None = None
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"sysgauge-openmetrics-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        source = self._source
        next_deadline = time.monotonic()
        while not source.stopping.is_set():
            self.scrape_once()
            next_deadline += source.interval
            now = time.monotonic()
            if next_deadline <= now:
                next_deadline = now + source.interval  # a slow scrape: start the schedule afresh
            if source.stopping.wait(next_deadline - now):
                return

    def scrape_once(self) -> None:
        # urllib.request pulls in ssl (about 6 MiB resident): only processes that scrape import it.
        from sysgauge.sources._http import FetchError, redact

        source = self._source
        try:
            readings = self._scrape()
        except (FetchError, ValueError) as exc:
            self.latest = None  # a failed scrape leaves no stale values behind
            self.last_error = str(exc)
            source.log.warning(
                f"scrape:{self.name}:{exc}",
                "sysgauge: openmetrics endpoint %s (%s) skipped: %s",
                self.name,
                redact(self.url),
                exc,
            )
            return
        self.last_error = None
        self.latest = (time.monotonic(), readings)
        if self._cap.dropped:
            source.log.warning(
                f"cap:{self.name}",
                "sysgauge: openmetrics endpoint %s exposes more than %d series; new series "
                "are dropped (openmetrics_max_series)",
                self.name,
                source.max_series,
            )

    def _scrape(self) -> list[Reading]:
        from sysgauge.sources._http import FetchError

        source = self._source
        for attempt, delay in enumerate((*_RETRY_DELAYS, None)):
            try:
                response = source.fetch(self.url, self._headers, source.timeout, source.max_bytes)
                break
            except FetchError as exc:
                retryable = str(exc).startswith(("cannot connect", "HTTP 5", "HTTP 429", "no answer"))
                if delay is None or not retryable or source.stopping.wait(delay):
                    raise
                _ = attempt
        try:
            text = response.body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"response is not UTF-8 text (byte {exc.start})") from None
        families, dropped = parse_scrape(text, response.content_type)
        if dropped:
            source.log.warning(
                f"long-lines:{self.name}",
                "sysgauge: openmetrics endpoint %s sent lines longer than %d characters; they are dropped "
                "unparsed (%d in this scrape)",
                self.name,
                MAX_LINE_CHARS,
                dropped,
            )
        return to_readings(self.name, samples_of(families), source.keep, source.registry, self._cap)


class OpenMetricsSource:
    name = SOURCE

    def __init__(
        self,
        endpoints: Mapping[str, str],
        filters: Sequence[str] | Mapping[str, Mapping[str, str]] = (),
        headers: Mapping[str, Mapping[str, str]] | None = None,
        interval: float = 2.0,
        timeout: float = 3.0,
        max_bytes: int = 10_000_000,
        max_series: int = 2000,
        fetch_fn: Fetch | None = None,
    ) -> None:
        self.interval = interval
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_series = max_series
        self.fetch: Fetch = fetch_fn or _fetch
        self.keep = MetricFilter(filters)
        self.registry = SpecRegistry()
        self.stopping = threading.Event()
        self.log = LogOnce(_logger)
        headers = headers or {}
        self._scrapers = [_Scraper(self, name, url, headers.get(name, {})) for name, url in endpoints.items()]
        self._started = False
        self._lock = threading.Lock()

    def probe(self) -> str | None:
        if not self._scrapers:
            return "no endpoints configured (openmetrics_endpoints)"
        return None

    def check(self) -> dict[str, str | None]:
        """One scrape of each endpoint now: {name: None or why it failed}. For `sysgauge detect`."""
        result = {}
        for scraper in self._scrapers:
            scraper.scrape_once()
            result[scraper.name] = scraper.last_error
        return result

    def specs(self) -> tuple[MetricSpec, ...]:
        return self.registry.all()

    @property
    def dynamic(self) -> bool:
        return True

    def read(self) -> list[Reading]:
        with self._lock:
            if not self._started:
                self._started = True
                for scraper in self._scrapers:
                    scraper.start()
        # A scrape older than this belongs to an endpoint that stopped answering.
        fresh_after = time.monotonic() - max(3 * self.interval, self.interval + 3 * self.timeout)
        readings: list[Reading] = []
        for scraper in self._scrapers:
            latest = scraper.latest
            if latest is not None and latest[0] >= fresh_after:
                readings.extend(latest[1])
        return readings

    def close(self) -> None:
        self.stopping.set()
        deadline = time.monotonic() + 1.0
        for scraper in self._scrapers:
            # A scraper inside a request notices the stop when it returns; the threads are daemons.
            scraper.join(max(0.0, deadline - time.monotonic()))
