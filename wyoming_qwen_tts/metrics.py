"""The server's Prometheus metrics (GET /metrics), one registry per server: two servers in one
process (tests) never share a count. Requests, first audio, real-time factor and stall cuts are
recorded by the speech layer, for both transports; what the models and batches hold now is read
when scraped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .model_lifecycle import ModelLifecycle

PREFIX = "qwen_tts"
FIRST_AUDIO_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 120)
REAL_TIME_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)


@dataclass(frozen=True)
class BatchRows:
    active: int  # rows generating in the batch
    waiting: int  # sentences waiting for a row


@dataclass
class EngineGauges:
    """What the engine holds now, asked when scraped: batch rows by model role, and GPU memory
    (allocated, reserved bytes; 0 on a CPU)."""

    batch_rows: Callable[[], dict[str, BatchRows]] = dict
    gpu_memory: Callable[[], tuple[int, int]] = lambda: (0, 0)


class SpeechMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(f"{PREFIX}_requests", "Speech requests answered, by transport and outcome (ok, "
                                "cancelled, or the error code)", ["transport", "outcome"], registry=self.registry)
        self.first_audio = Histogram(f"{PREFIX}_first_audio_seconds", "From a request's first sentence to its first "
                                     "audio (waiting for the models included)", ["transport"],
                                     buckets=FIRST_AUDIO_BUCKETS, registry=self.registry)
        self.real_time = Histogram(f"{PREFIX}_real_time_factor", "Seconds of audio per second of generation, "
                                   "per request (above 1: faster than real time)", ["transport"],
                                   buckets=REAL_TIME_BUCKETS, registry=self.registry)
        self.stall_cuts = Counter(f"{PREFIX}_stall_cuts", "Sentences cut by the stall rule (--stall-timeout)",
                                  ["transport"], registry=self.registry)

    def watch(self, lifecycle: ModelLifecycle, engine: EngineGauges) -> None:
        """Also report the models' loads and unloads and what the engine holds."""
        self.registry.register(_EngineCollector(lifecycle, engine))

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _EngineCollector(Collector):
    def __init__(self, lifecycle: ModelLifecycle, engine: EngineGauges) -> None:
        self._lifecycle = lifecycle
        self._engine = engine

    def collect(self) -> Iterator:
        lifecycle = self._lifecycle
        yield CounterMetricFamily(f"{PREFIX}_model_loads", "Loads of the models finished", value=lifecycle.loads)
        yield CounterMetricFamily(f"{PREFIX}_model_load_seconds", "Seconds spent loading the models",
                                  value=lifecycle.load_seconds)
        yield CounterMetricFamily(f"{PREFIX}_model_unloads", "Unloads of the models (--unload-after)",
                                  value=lifecycle.unloads)
        yield CounterMetricFamily(f"{PREFIX}_model_unload_seconds", "Seconds spent unloading the models",
                                  value=lifecycle.unload_seconds)
        rows = self._engine.batch_rows()
        active = GaugeMetricFamily(f"{PREFIX}_batch_rows_active", "Sentences generating in a batch", labels=["model"])
        waiting = GaugeMetricFamily(f"{PREFIX}_batch_rows_waiting", "Sentences waiting for a batch row",
                                    labels=["model"])
        for role, counts in sorted(rows.items()):
            active.add_metric([role], counts.active)
            waiting.add_metric([role], counts.waiting)
        yield active
        yield waiting
        allocated, reserved = self._engine.gpu_memory()
        yield GaugeMetricFamily(f"{PREFIX}_gpu_memory_allocated_bytes", "GPU memory held by tensors (0 on a CPU)",
                                value=allocated)
        yield GaugeMetricFamily(f"{PREFIX}_gpu_memory_reserved_bytes", "GPU memory reserved by PyTorch's allocator "
                                "(0 on a CPU)", value=reserved)
