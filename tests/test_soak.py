"""`python -m trtdeploy.soak`: a real soak on the tiny CLIP bundle passes, and each thing it
checks (equality with the serial run, no exceptions, bounded memory growth) fails when broken."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from trtdeploy.build import BuildResult
from trtdeploy.runtime.errors import InputValidationError
from trtdeploy.runtime.pipelines.clip import Ranked
from trtdeploy.soak import SoakReport, SoakSettings, finish, main, same, soak


def test_short_soak_on_tiny_clip_passes(tiny_clip: BuildResult, capsys: pytest.CaptureFixture[str]) -> None:
    code = main([str(tiny_clip.bundle), "--threads", "4", "--seconds", "3", "--target", "onnxruntime"])
    out = capsys.readouterr().out
    assert code == 0, out
    figures = dict(line.split(None, 1) for line in out.splitlines() if not line.startswith(("rss", "soak")))
    assert figures["threads"] == "4" and figures["errors"] == "0" and figures["mismatches"] == "0"
    assert int(figures["calls"].split()[0]) > 0
    assert "rss mid" in out and "growth" in out and out.rstrip().endswith("soak passed")


def _slow(value: object, seconds: float = 0.002) -> object:
    time.sleep(seconds)  # keeps the fixtures' call counts (and their lists) small
    return value


def test_leaking_work_fails_the_memory_check(capsys: pytest.CaptureFixture[str]) -> None:
    kept: list[np.ndarray] = []

    def leaky(i: int) -> object:
        kept.append(np.ones(2 * 2**20, np.uint8))  # 2 MiB, touched, so resident
        return _slow(i, 0.1)  # 4 threads: about 80 MiB/s

    report = soak(leaky, 3, SoakSettings(threads=4, seconds=2.0, max_growth_mib=20))
    kept.clear()
    assert report.growth_mib > 20
    assert finish(report) == 1
    out = capsys.readouterr().out
    assert (
        f"FAIL growth: resident memory grew {report.growth_mib:.1f} MiB from half time to the end (bound 20 MiB)"
        in out
    )
    assert "soak failed: growth" in out


def test_wrong_answer_from_one_thread_fails_equality(capsys: pytest.CaptureFixture[str]) -> None:
    def racy(i: int) -> object:
        answer = np.arange(4.0) * i
        if threading.current_thread().name == "soak-2":
            answer[1] += 1e-7  # exact comparison: the smallest difference counts
        return _slow(answer)

    report = soak(racy, 5, SoakSettings(threads=4, seconds=1.0))
    assert report.mismatches and all(m.endswith("in soak-2") for m in report.mismatches)
    assert not report.errors
    assert finish(report) == 1
    out = capsys.readouterr().out
    assert f"FAIL mismatches: {len(report.mismatches)} results differ from the serial run (first: call" in out
    assert "soak failed: mismatches" in out


def test_raising_call_is_counted_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    made, lock = [0], threading.Lock()

    def flaky(i: int) -> object:
        if threading.current_thread() is not threading.main_thread():
            with lock:
                made[0] += 1
                fail = made[0] == 10
            if fail:
                raise RuntimeError("engine said no")
        return _slow(i)

    report = soak(flaky, 4, SoakSettings(threads=4, seconds=1.0))
    assert len(report.errors) == 1 and "RuntimeError('engine said no')" in report.errors[0]
    assert report.calls >= 10 and not report.mismatches
    assert finish(report) == 1
    out = capsys.readouterr().out
    assert "errors      1" in out and "FAIL errors: 1 calls raised (first: call" in out


def test_memory_sampler_is_injectable() -> None:
    began, mib = time.monotonic(), 2**20

    def fake_rss() -> int:  # flat, then 40 MiB more from 70% of the run on
        return (100 if time.monotonic() - began < 0.7 else 140) * mib

    report = soak(_slow, 2, SoakSettings(threads=2, seconds=1.0, max_growth_mib=30), rss=fake_rss)
    assert (report.rss_start, report.rss_mid, report.rss_end) == (100 * mib, 100 * mib, 140 * mib)
    assert report.growth_mib == 40 and report.rss_samples > 20
    assert [f.split(":")[0] for f in report.failures()] == ["growth"]


def test_same_compares_exactly_through_results() -> None:
    a = [Ranked("a cat", 0.75), Ranked("a dog", 0.25)]
    assert same(a, [Ranked("a cat", 0.75), Ranked("a dog", 0.25)])
    assert not same(a, [Ranked("a cat", 0.75), Ranked("a dog", 0.2500001)])
    assert same(np.zeros(3, np.float32), np.zeros(3, np.float32))
    assert not same(np.zeros(3, np.float32), np.zeros(3, np.float64))
    assert not same(np.zeros(3), [0.0, 0.0, 0.0])


def test_bad_settings_and_unknown_pipeline_are_refused(
    tiny_clip_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(InputValidationError, match="threads must be a whole number >= 1, got 0"):
        SoakSettings(threads=0)
    with pytest.raises(SystemExit):
        main([str(tiny_clip_copy), "--seconds", "0"])
    manifest = tiny_clip_copy / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "pipeline": "no-such-pipeline"}))
    assert main([str(tiny_clip_copy), "--seconds", "1"]) == 3  # a bundle of a pipeline this trtdeploy lacks
    assert "the pipeline 'no-such-pipeline'" in capsys.readouterr().err


def test_every_pipeline_has_soak_calls() -> None:
    from trtdeploy.runtime.pipelines import PIPELINES
    from trtdeploy.soak import SOAK_CALLS

    assert set(SOAK_CALLS) == set(PIPELINES)


def test_report_lines_name_every_figure() -> None:
    report = SoakReport(SoakSettings(threads=8), distinct=8, calls=4273, seconds=30.0, rss_start=189 * 2**20)
    names = [
        line.split()[0] + (" " + line.split()[1] if line.startswith("rss") else "") for line in report.lines()
    ]
    assert names == [
        "threads",
        "calls",
        "calls/s",
        "errors",
        "stuck",
        "mismatches",
        "rss start",
        "rss mid",
        "rss end",
        "growth",
    ]
