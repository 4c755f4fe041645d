"""The check's own process: parse the options, run the plan's steps in order of importance inside the budget
(each but the machine step in a child process it can kill), keep their logs, and write the output folder
after every step, so a device taken away mid-run still leaves what was measured. Standard library only, but
for the final bench tables and PNG, which use bertfast's report module when it imports."""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.gpu_check import derive, files, summary
from benchmarks.gpu_check.machine import machine, nvidia_smi
from benchmarks.gpu_check.plan import (DRY_CONFIG, DRY_CONFIG_DIR, DRY_RUN, GPU, OWN_MODEL_STEPS, SKIPPED, STEPS,
                                      Budget, Mode, Step)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "bertfast-gpu-check/1"
PYTEST = [sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider"]  # addopts: pytest.ini's
# --benchmark-disable, an error where pytest-benchmark is missing


class Check:
    def __init__(self, mode: Mode, out: Path, budget: Budget, command: str, scratch: str):
        self.mode, self.out, self.budget, self.scratch = mode, out, budget, Path(scratch)
        self.start = time.monotonic()
        self.records: list[dict[str, Any]] = []
        self.logs: dict[str, str] = {}
        self.no_cuda: str | None = None  # why the GPU steps cannot run, once the ceilings step found no CUDA
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        if mode.threads is not None:
            self.env["OMP_NUM_THREADS"] = str(mode.threads)
        self.header = {"schema": SCHEMA, "command": command, "mode": dataclasses.asdict(mode),
                       "dry_run": mode.name == DRY_RUN.name, "budget_s": budget.seconds, "out": str(out),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if self.header["dry_run"]:
            (self.scratch / DRY_CONFIG_DIR).mkdir()
            (self.scratch / DRY_CONFIG_DIR / "config.json").write_text(json.dumps(DRY_CONFIG))

    def run(self) -> dict[str, Any]:
        for step in STEPS:
            self.records.append(self.step(step))
            self.save(final=False)
        return self.save(final=True)

    def step(self, step: Step) -> dict[str, Any]:
        record = {"name": step.name, "what": step.what, "status": "skipped", "reason": None, "seconds": 0.0,
                  "timeout_s": None, "expected_s": step.expected_s(self.mode), "result": None}
        if self.header["dry_run"] and step.dry_skip:
            record["reason"] = f"dry run: {step.dry_skip}"
        elif self.no_cuda and step.kind != "machine":
            record["reason"] = self.no_cuda
        else:
            timeout, cut = self.budget.admit(step, self.mode)
            if timeout is None:
                record.update(status="cut", reason=cut)
            else:
                self._progress(f"{step.name}: running (at most {timeout:.0f} s)")
                record["timeout_s"] = round(timeout, 1)
                begin = time.monotonic()
                record.update(self._execute(step, timeout))
                record["seconds"] = round(time.monotonic() - begin, 1)
        if step.kind == "ceilings" and record["status"] == "skipped" and not self.header["dry_run"]:
            self.no_cuda = record["reason"]
        self._progress(f"{step.name}: {record['status']}" + (f" ({record['reason']})" if record["reason"] else ""))
        return record

    def _execute(self, step: Step, timeout: float) -> dict[str, Any]:
        """Run one admitted step: status, reason and result."""
        if step.kind == "machine":
            return {"status": "ran", "result": machine(ROOT)}
        if step.kind == "pytest-tests":
            return self._tests(step, timeout)
        if step.kind == "pytest-kernels":
            return self._kernels(step, timeout)
        dtype = self.mode.dtype(step.dtype)
        if step.kind == "bench":
            unavailable = self._unavailable(step, dtype)
            if unavailable:
                return {"status": "skipped", "reason": unavailable}
        params = self.scratch / "params.json"
        result_path = self.scratch / f"{step.name}.json"
        params.write_text(json.dumps({"mode": self.header["mode"], "scratch": str(self.scratch), "dtype": dtype,
                                      "providers": step.bench_providers(self.mode), "model": step.model}))
        command = [sys.executable, "-m", "benchmarks.gpu_check.steps", step.kind, str(params), str(result_path)]
        rc, log = self._spawn(step, command, timeout)
        if rc != 0:
            return {"status": "failed", "reason": self._failure(step, rc, log, timeout)}
        result = json.loads(result_path.read_text())
        if SKIPPED in result:
            return {"status": "skipped", "reason": result.pop(SKIPPED), "result": result}
        return {"status": "ran", "result": result}

    def _unavailable(self, step: Step, dtype: str) -> str | None:
        """Why none of a bench step's providers can run here, from the ceilings step's view of every provider
        (None when one can, or when the ceilings step did not say: the runner then skips what cannot run)."""
        available = ((self._result("ceilings") or {}).get("providers") or {}).get(dtype)
        if available is None:
            return None
        reasons = [available.get(name) for name in step.providers]
        return "; ".join(f"{name}: {why}" for name, why in zip(step.providers, reasons)) if all(reasons) else None

    def _tests(self, step: Step, timeout: float) -> dict[str, Any]:
        if importlib.util.find_spec("pytest") is None:
            return {"status": "skipped", "reason": "pytest is not installed"}
        command = [*PYTEST, "-m", "cuda", "-v", "-rfE", "--tb=short", "--continue-on-collection-errors",
                   *self.mode.test_paths]  # a test file importing a package the machine lacks stops no other
        rc, log = self._spawn(step, command, timeout)
        outcomes = derive.pytest_outcomes(log)
        if rc in (0, 1, 5):  # all passed, some failed, none selected: the step ran, the result says how it went
            return {"status": "ran", "result": outcomes}
        return {"status": "failed", "reason": self._failure(step, rc, log, timeout), "result": outcomes}

    def _kernels(self, step: Step, timeout: float) -> dict[str, Any]:
        if importlib.util.find_spec("pytest_benchmark") is None:
            return {"status": "skipped", "reason": "pytest-benchmark is not installed (the kernel benchmarks need it)"}
        raw_path = self.scratch / files.KERNELS_JSON
        command = [*PYTEST, "benchmarks/bench_kernels.py", "-q", "--benchmark-enable", f"--benchmark-json={raw_path}",
                   "--benchmark-sort=fullname", "--benchmark-columns=median,iqr,rounds"]
        rc, log = self._spawn(step, command, timeout)
        if rc not in (0, 1) or not raw_path.exists():
            return {"status": "failed", "reason": self._failure(step, rc, log, timeout)}
        raw = json.loads(raw_path.read_text())
        for case in raw.get("benchmarks", []):  # the figures keep every statistic; the raw timings can go
            case.get("stats", {}).pop("data", None)
        files.write_json(self.out / files.KERNELS_JSON, raw)
        copy = (self._result("ceilings") or {}).get("copy") or {}
        result = derive.kernel_figures(raw, copy.get("best_gbs"))
        if rc == 1:
            result["note"] = "some kernel benchmarks failed: see kernels.log"
        return {"status": "ran", "result": result}

    def _result(self, name: str) -> dict[str, Any] | None:
        return next((r["result"] for r in self.records if r["name"] == name and r["status"] == "ran"), None)

    def _spawn(self, step: Step, command: list[str], timeout: float) -> tuple[int | None, str]:
        """Run ``command`` in a session of its own, killed with everything it started after ``timeout`` seconds;
        (exit status or None when killed, its output). The output goes to the step's log."""
        path = self.scratch / "step.log"
        with open(path, "wb") as log:
            child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env,
                                     start_new_session=True)
            try:
                rc: int | None = child.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, KeyboardInterrupt) as e:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                if isinstance(e, KeyboardInterrupt):
                    raise
                rc = None
        text = path.read_text(encoding="utf-8", errors="replace")
        name = files.LOGS.get(step.kind, files.STEPS_LOG)
        status = "killed at the time limit" if rc is None else f"exit status {rc}"
        self.logs[name] = (self.logs.get(name, "") + f"===== {step.name}: {shlex.join(command)}\n{text}"
                           f"\n===== {step.name}: {status}\n\n")
        return rc, text

    def _failure(self, step: Step, rc: int | None, log: str, timeout: float) -> str:
        where = files.LOGS.get(step.kind, files.STEPS_LOG)
        if rc is None:
            limit = "its cap" if timeout >= step.cap_s else "the end of --budget-s"
            return f"timed out after {timeout:.0f} s ({limit}); {where} has what it printed"
        last = next((line for line in reversed(log.strip().splitlines()) if line.strip()), "no output")
        return f"exit status {rc}: {last.strip()} (the whole output is in {where})"

    def _progress(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:4.0f} s] {text}", file=sys.stderr, flush=True)

    def save(self, final: bool) -> dict[str, Any]:
        """Write results.json and the logs (and, at the end, summary.md and bench.png); return the results."""
        facts = derive.Facts(self.mode, {r["name"]: r["result"] for r in self.records if r["status"] == "ran"})
        results = {**self.header, "elapsed_s": round(time.monotonic() - self.start, 1), "finished": final,
                   "steps": self.records, "targets": derive.targets(facts)}
        if final:
            results["nvidia_smi_end"] = nvidia_smi()
        for name, text in self.logs.items():
            files.write_log(self.out / name, text)
        bench_markdown = self._bench_outputs(results) if final else None
        written = {name for name in files.OUTPUTS if (self.out / name).exists()} | {files.RESULTS}
        results["files"] = [name for name in files.OUTPUTS if name in written or (final and name == files.SUMMARY)]
        files.write_json(self.out / files.RESULTS, results)
        if final:
            files.write_text(self.out / files.SUMMARY, summary.markdown(results, bench_markdown))
        return results

    def _bench_outputs(self, results: dict[str, Any]) -> str | None:
        """bench.png and the runner's markdown of the bench steps' merged reports, then the reports of the steps
        with a model of their own (ModernBERT's) each as it is (None without any)."""
        ran = [(s["name"], s["result"]) for s in results["steps"]
               if s["status"] == "ran" and "schema" in (s["result"] or {})]
        merged = summary.merge_reports([r for name, r in ran if name not in OWN_MODEL_STEPS])
        others = [(name, r) for name, r in ran if name in OWN_MODEL_STEPS]
        if merged is None and not others:
            return None
        try:
            from bertfast.bench import report
        except Exception as e:  # a broken install: the numbers are in results.json all the same
            return f"(the bench tables need bertfast.bench.report, which failed to import: {type(e).__name__}: {e})"
        text = ""
        if merged is not None:
            try:
                files.plot_to(self.out / files.PLOT, lambda path: report.plot(merged, path))
            except Exception as e:  # e.g. matplotlib missing
                results["plot_error"] = f"{type(e).__name__}: {e}"
            text = report.markdown(merged)
        for name, result in others:
            text += f"\n## {name}: ModernBERT, the tables below\n\n" + report.markdown(result)
        return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help=f"folder for {', '.join(files.OUTPUTS)} (new, empty, or an earlier check's)")
    parser.add_argument("--budget-s", type=float, default=480.0, metavar="S",
                        help="seconds the whole check may take; the least important steps are cut to fit "
                             "(default: %(default)g)")
    parser.add_argument("--dry-run", action="store_true",
                        help="the same plan on the CPU with a tiny model: GPU-only steps skipped with their reasons")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        budget = Budget(args.budget_s)
        files.prepare_out_dir(args.out)
    except ValueError as e:
        print(f"python -m benchmarks.gpu_check: error: {e}", file=sys.stderr)
        return 2
    command = shlex.join(["python", "-m", "benchmarks.gpu_check", *(sys.argv[1:] if argv is None else argv)])
    with tempfile.TemporaryDirectory(prefix="bertfast-gpu-check-") as scratch:
        results = Check(DRY_RUN if args.dry_run else GPU, args.out, budget, command, scratch).run()
    print(summary.screen(results))
    return 0
