"""`python -m trtdeploy.soak BUNDLE`: one loaded bundle under concurrent load, checked for
thread safety and memory growth.

    python -m trtdeploy.soak BUNDLE [--threads 8] [--seconds 30] [--max-growth-mib 100] [--target T]

The bundle is loaded once and its pipeline built once, as a server would. A fixed set of calls
(real photographs; CLIP: zero_shot and image_embeddings, CLIPSeg: segment) is run serially first:
that is the expected answer, and the warm-up. The same calls then run from N threads sharing the
pipeline for the given time. It passes when every concurrent result equals the serial one exactly
(np.array_equal: the engines are deterministic, so a difference is a race, not rounding), no call
raised, and resident memory grew by less than the bound from half time (after warm-up under load)
to the end (Triton's L0_memory_growth rule: heap growth after the middle of the run).

It prints one line per figure and exits 0 on pass, 1 naming the failing figure. Under many
threads the allocator itself takes minutes to settle (see DEFAULT_MAX_GROWTH_MIB): judge memory on
runs of minutes, or set MALLOC_ARENA_MAX=2 for a short one.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trtdeploy.runtime.errors import InputValidationError, TrtDeployError
from trtdeploy.runtime.targets import AUTO_TARGET, TARGETS, resolve_target

MIB = 2**20
# Growth allowed from half time to the end. Triton's memory-growth test allows 100 MB after the
# middle of the run ("bounded growth tests typically show < 70 MB"); we keep that figure. Measured on
# the tiny bundles, ONNX Runtime CPU, 8 threads, 2 shared cores:
#   CLIP     30 s,  1,649 calls: RSS 129 / 219 / 220 MiB (start / mid / end), +0.1 MiB
#   CLIPSeg  600 s, 12,050 calls: RSS 313 / 1010 / 1021 MiB, +11 MiB; 1 thread, 120 s: +0.1 MiB
#   CLIPSeg  30 s,  342 calls: RSS 311 / 746 / 843 MiB, +97 MiB
# CLIPSeg's RSS climbs about 150 MiB over the first five minutes under 8 threads, then stays flat:
# glibc's per-thread malloc arenas filling (MALLOC_ARENA_MAX=2 leaves +21 MiB in 30 s), not a
# per-call leak (one thread: flat). So a run shorter than that is still warming up: `make soak` runs
# ten minutes, where 100 MiB over the second half catches a leak of about 17 kB per CLIPSeg call
# (6 kB per CLIP call) and leaves 9x the growth we measured.
DEFAULT_MAX_GROWTH_MIB = 100.0
SHOWN_ERRORS = 3
# How long the threads get to finish their last call once time is up; a call still running then
# is reported as stuck (a deadlock must fail the soak, not hang it). Calls take milliseconds.
JOIN_SECONDS = 30.0
# RSS at one instant includes whatever the calls in flight hold: tiny CLIPSeg with 8 threads moved
# by up to 100 MiB between samples 15 s apart. Mid and end are therefore medians of many samples over
# the last tenth of each half, which steadies them without hiding a leak (a leak raises them all).
MID_WINDOW = (0.4, 0.5)
END_WINDOW = (0.9, 1.0)

Work = Callable[[int], object]  # the i-th of a fixed set of calls -> its result
Sampler = Callable[[], int]  # resident memory of this process, in bytes


@dataclass(frozen=True)
class SoakSettings:
    threads: int = 8
    seconds: float = 30.0
    max_growth_mib: float = DEFAULT_MAX_GROWTH_MIB

    def __post_init__(self) -> None:
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1:
            raise InputValidationError(f"threads must be a whole number >= 1, got {self.threads!r}.")
        if not self.seconds > 0:
            raise InputValidationError(f"seconds must be > 0, got {self.seconds!r}.")
        if not self.max_growth_mib >= 0:
            raise InputValidationError(f"max growth must be >= 0 MiB, got {self.max_growth_mib!r}.")


@dataclass
class SoakReport:
    settings: SoakSettings
    distinct: int  # calls in the fixed set
    calls: int = 0  # concurrent calls made (errors included)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # one per call that raised: "call i in thread: repr"
    mismatches: list[str] = field(default_factory=list)  # one per result unequal to the serial one
    rss_start: int = 0  # after the serial run, before the threads start
    rss_mid: int = 0  # median over MID_WINDOW, threads running
    rss_end: int = 0  # median over END_WINDOW, threads still running (the same load as at mid)
    rss_samples: int = 0
    stuck: list[str] = field(default_factory=list)  # threads still in a call JOIN_SECONDS after the end

    @property
    def growth_mib(self) -> float:
        return (self.rss_end - self.rss_mid) / MIB

    def failures(self) -> list[str]:
        out = []
        if self.errors:
            out.append(
                f"errors: {len(self.errors)} calls raised (first: {'; '.join(self.errors[:SHOWN_ERRORS])})"
            )
        if self.mismatches:
            shown = "; ".join(self.mismatches[:SHOWN_ERRORS])
            out.append(
                f"mismatches: {len(self.mismatches)} results differ from the serial run (first: {shown})"
            )
        if self.growth_mib >= self.settings.max_growth_mib:
            out.append(
                f"growth: resident memory grew {self.growth_mib:.1f} MiB from half time to the end "
                f"(bound {self.settings.max_growth_mib:g} MiB): memory is retained per call"
            )
        if self.stuck:
            out.append(
                f"stuck: {len(self.stuck)} threads ({', '.join(self.stuck)}) were still in a call "
                f"{JOIN_SECONDS:g} s after the end: a deadlock or a hung engine"
            )
        if self.calls == 0:
            out.append("calls: no concurrent call finished; raise --seconds")
        return out

    def lines(self) -> list[str]:
        rate = self.calls / self.seconds if self.seconds else 0.0
        return [
            f"threads     {self.settings.threads}",
            f"calls       {self.calls} ({self.distinct} distinct, {self.seconds:.1f} s)",
            f"calls/s     {rate:.1f}",
            f"errors      {len(self.errors)}",
            f"stuck       {len(self.stuck)}",
            f"mismatches  {len(self.mismatches)}",
            f"rss start   {self.rss_start / MIB:.1f} MiB",
            f"rss mid     {self.rss_mid / MIB:.1f} MiB (median, {_window(MID_WINDOW)} of the run)",
            f"rss end     {self.rss_end / MIB:.1f} MiB (median, {_window(END_WINDOW)} of the run)",
            f"growth      {self.growth_mib:+.1f} MiB (bound {self.settings.max_growth_mib:g} MiB)",
        ]


def _window(window: tuple[float, float]) -> str:
    return f"{window[0]:.0%}-{window[1]:.0%}"


def process_rss() -> int:
    """Resident set size of this process: psutil where installed, else /proc (Linux)."""
    try:
        import psutil
    except ImportError:
        try:
            pages = int(Path("/proc/self/statm").read_text().split()[1])
        except OSError as exc:
            raise InputValidationError(
                "cannot read this process's resident memory: install psutil (pip install psutil)."
            ) from exc
        import resource

        return pages * resource.getpagesize()
    return int(psutil.Process().memory_info().rss)


def same(a: object, b: object) -> bool:
    """Exact equality through the results pipelines return: arrays, dataclasses, sequences."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.dtype == b.dtype
            and np.array_equal(a, b)
        )
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(
            same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, (list, tuple)):
        return (
            isinstance(b, (list, tuple))
            and len(a) == len(b)
            and all(same(x, y) for x, y in zip(a, b, strict=True))
        )
    return bool(a == b)


def soak(work: Work, distinct: int, settings: SoakSettings, *, rss: Sampler = process_rss) -> SoakReport:
    """Run ``work(0..distinct-1)`` serially, then from ``settings.threads`` threads for
    ``settings.seconds``, comparing every concurrent result with the serial one."""
    if distinct < 1:
        raise InputValidationError(f"a soak needs at least one call, got {distinct}.")
    expected = [work(i) for i in range(distinct)]  # the answer, and the warm-up
    report = SoakReport(settings, distinct, rss_start=rss())
    lock, stop = threading.Lock(), threading.Event()
    counter = itertools.count()  # next() on it is atomic under the GIL; the lock guards the report

    def worker() -> None:
        name = threading.current_thread().name
        while not stop.is_set():
            i = next(counter) % distinct  # threads interleave over the fixed calls
            try:
                result: object = work(i)
                ok = same(result, expected[i])
            except Exception as exc:  # counted, not fatal: a soak measures how often calls fail
                with lock:
                    report.calls += 1
                    report.errors.append(f"call {i} in {name}: {exc!r}")
                continue
            with lock:
                report.calls += 1
                if not ok:
                    report.mismatches.append(f"call {i} in {name}")

    threads = [
        threading.Thread(target=worker, name=f"soak-{k}", daemon=True) for k in range(settings.threads)
    ]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    samples = sample_memory(rss, settings.seconds)
    stop.set()
    give_up = time.monotonic() + JOIN_SECONDS
    for thread in threads:
        thread.join(max(0.0, give_up - time.monotonic()))
    report.stuck = [t.name for t in threads if t.is_alive()]
    report.seconds = time.monotonic() - start
    report.rss_mid = window_median(samples, *MID_WINDOW, settings.seconds)
    report.rss_end = window_median(samples, *END_WINDOW, settings.seconds)
    report.rss_samples = len(samples)
    return report


def sample_memory(rss: Sampler, seconds: float) -> list[tuple[float, int]]:
    """(seconds since start, RSS) 40 times over the run (at least once a second), the last at the end."""
    interval = min(1.0, seconds / 40)
    start = time.monotonic()
    samples = []
    while (now := time.monotonic() - start) < seconds:
        samples.append((now, rss()))
        time.sleep(max(0.0, min(interval, seconds - (time.monotonic() - start))))
    samples.append((time.monotonic() - start, rss()))
    return samples


def window_median(samples: Sequence[tuple[float, int]], begin: float, end: float, seconds: float) -> int:
    """Median RSS of the samples taken between ``begin`` and ``end`` (fractions of the run); the
    sample nearest the window's end if none fell inside it."""
    inside = sorted(r for t, r in samples if begin * seconds <= t <= end * seconds)
    if not inside:
        return min(samples, key=lambda s: abs(s[0] - end * seconds))[1]
    return inside[len(inside) // 2]


# -- the calls each pipeline is soaked with ------------------------------------------------------------


def clip_calls(pipeline: Any) -> list[Callable[[], object]]:
    """zero_shot of each evaluation photograph against the evaluation labels, and the embeddings
    of all of them in one batch (so batched and single-image calls overlap)."""
    from trtdeploy.calibration.images import EVALUATION_IMAGES, load_images
    from trtdeploy.calibration.prompts import EVALUATION_PROMPTS

    images, labels = load_images(EVALUATION_IMAGES), list(EVALUATION_PROMPTS)
    calls: list[Callable[[], object]] = [
        functools.partial(pipeline.zero_shot, image, labels) for image in images
    ]
    return [*calls, functools.partial(pipeline.image_embeddings, images)]


def clipseg_calls(pipeline: Any) -> list[Callable[[], object]]:
    """segment of each evaluation photograph with three, then all, segmentation prompts."""
    from trtdeploy.calibration.images import EVALUATION_IMAGES, load_images
    from trtdeploy.calibration.prompts import SEGMENTATION_PROMPTS

    images, prompts = load_images(EVALUATION_IMAGES), list(SEGMENTATION_PROMPTS)
    return [
        functools.partial(pipeline.segment, image, chosen)
        for image in images
        for chosen in (prompts[:3], prompts)
    ]


def florence2_calls(pipeline: Any) -> list[Callable[[], object]]:
    """<CAPTION> and <OD> of each evaluation photograph, each a whole generation with the bundle's
    beam search (answers and tokens compared exactly)."""
    from trtdeploy.calibration.images import EVALUATION_IMAGES, load_images

    images = load_images(EVALUATION_IMAGES)
    return [
        functools.partial(pipeline.answer, [image], task, max_new_tokens=12)
        for image in images
        for task in ("<CAPTION>", "<OD>")
    ]


SOAK_CALLS: dict[str, Callable[[Any], list[Callable[[], object]]]] = {
    "clip": clip_calls,
    "clipseg": clipseg_calls,
    "florence2": florence2_calls,
}


def bundle_work(bundle_path: Path, target: str = AUTO_TARGET) -> tuple[Work, int]:
    """The fixed calls for a bundle's pipeline, over one pipeline shared by every caller."""
    from trtdeploy.runtime import Bundle
    from trtdeploy.runtime.pipelines import pipeline_class

    bundle = Bundle.load(bundle_path)
    name = bundle.manifest.pipeline
    if name not in SOAK_CALLS:
        raise InputValidationError(
            f"the bundle's pipeline is {name!r}; the soak knows how to drive {sorted(SOAK_CALLS)}. "
            "Add its calls to SOAK_CALLS in frontdoor/soak.py."
        )
    pipeline = pipeline_class(name).from_bundle(bundle, resolve_target(target))
    calls = SOAK_CALLS[name](pipeline)
    return (lambda i: calls[i]()), len(calls)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trtdeploy.soak", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("bundle", type=Path, help="a bundle folder (build/<model>/<precision>)")
    parser.add_argument("--threads", type=_positive_int, default=8, help="concurrent callers (default 8)")
    parser.add_argument(
        "--seconds", type=_positive_float, default=30.0, help="how long they call (default 30)"
    )
    parser.add_argument(
        "--max-growth-mib",
        type=float,
        default=DEFAULT_MAX_GROWTH_MIB,
        help=f"resident memory growth allowed from half time to the end (default {DEFAULT_MAX_GROWTH_MIB:g})",
    )
    parser.add_argument(
        "--target", default=AUTO_TARGET, choices=(*TARGETS, AUTO_TARGET), help="backend (default auto)"
    )
    return parser


def main(argv: Sequence[str] | None = None, *, rss: Sampler = process_rss) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = SoakSettings(args.threads, args.seconds, args.max_growth_mib)
        work, distinct = bundle_work(args.bundle, args.target)
        report = soak(work, distinct, settings, rss=rss)
    except TrtDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return finish(report)


def finish(report: SoakReport) -> int:
    """Print the figures and the verdict; 0 on pass, 1 when any figure failed."""
    for line in report.lines():
        print(line)
    failures = report.failures()
    for failure in failures:
        print(f"FAIL {failure}")
    print("soak passed" if not failures else f"soak failed: {', '.join(f.split(':')[0] for f in failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
