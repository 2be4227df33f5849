"""The GPU proof in one call: the speed table, the full-size pipeline, every training path under
`run.precision: auto` and inference, with logs and one JSON summary (bench/gpu_check.sh runs this).

  python bench/gpu_check.py --prepare          here, where spaCy is: the token stores and small data the
                                               device needs, into .gpu_check/; prints the carry list and
                                               the device tool's command
  python bench/gpu_check.py [--out DIR]        on the GPU machine: everything, within --budget seconds
  python bench/gpu_check.py --smoke [--out DIR]  the same steps at tiny sizes on the CPU (tests/test_gpu_check.py)

Each step is a subprocess with its own time limit: a step that fails or runs out of time is recorded and
the next one runs, so one call gives every answer it can. The steps run by priority (the speed table
first) and a step that would not fit in what is left of the budget is skipped, named as skipped.
`$OUT/summary.json` holds the device, the versions, each step (status, seconds, log, figures) and the
targets checked; `$OUT/logs/` each step's output.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INPUTS = ROOT / ".gpu_check"  # built here by --prepare, carried to the device (ignored by git)
PY = sys.executable
TINY_DATA = ["data.max_docs=8", "data.min_freq=1", "data.max_vocab=2000"]  # the tiny store: 8 articles
TARGETS = {"ulmfit_over_stock_bs64": 3.0, "ulmfit_over_bare": 0.9, "valid_loss_within": 0.01}
STOCK_TREC6_TEST = 0.890  # stock fastai, full size, 10 LM epochs, measured earlier on an H100 (issue 30)


# ---------------------------------------------------------------- inputs, built where spaCy is
def prepare_inputs(dest: Path, smoke: bool) -> dict:
    """Token stores of the Wikipedia excerpt (full: configs/wikitext103.yaml's vocab settings; tiny: 60
    articles) and a small CSV of TREC-6 questions with a multi-label column and a number, into `dest`."""
    sys.path.insert(0, str(ROOT / "bench"))
    import pandas as pd
    from prepare_speed import sample_dump

    from ulmfit_cli import api
    dest.mkdir(parents=True, exist_ok=True)
    sizes = {"tiny": TINY_DATA}
    if not smoke:
        sizes["full"] = []  # configs/wikitext103.yaml's data settings
    made = {}
    for name, extra in sizes.items():
        if not (dest / f"store-{name}" / "COMPLETE").is_file():
            store = api.prepare([ROOT / "configs" / "wikitext103.yaml"],
                                [f"data.source={sample_dump()}", f"data.cache_dir={dest / 'cache'}", *extra])
            shutil.rmtree(dest / f"store-{name}", ignore_errors=True)
            shutil.copytree(store.path, dest / f"store-{name}")
        made[name] = dest / f"store-{name}"
    shutil.rmtree(dest / "cache", ignore_errors=True)
    trec = pd.read_csv(ROOT / "data" / "trec6" / "train.csv").sample(n=240 if smoke else 600, random_state=0)
    words = trec["text"].str.split().str.len()
    trec["tags"] = trec["label"] + ";" + (words > words.median()).map({True: "long", False: "short"})
    trec["score"] = words.astype(float)
    trec.to_csv(dest / "tasks.csv", index=False)
    return made


def device_call(dest: Path) -> None:
    """What to carry and the command, and whether it all fits in what the device tool sends (64 MiB)."""
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) / 2 ** 20
    wheels = ROOT / ".whl"
    have = sum(f.stat().st_size for f in wheels.glob("*.whl")) / 2 ** 20 if wheels.is_dir() else 0
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True)
    tree = sum((ROOT / f).stat().st_size for f in listed.stdout.decode().split("\0") if f and (ROOT / f).is_file())
    total = size + have + tree / 2 ** 20
    print(f"\n{dest.relative_to(ROOT)}: {size:.1f} MiB; .whl: {have:.1f} MiB"
          + ("" if have else " (none yet: run ../shared/tools/device-wheels fastapi==0.165.0 first)")
          + f"; with the working tree {total:.1f} MiB of the 64 MiB a call sends"
          + ("" if total < 64 else ": TOO LARGE, carry less"))
    print("device tool call:")
    print(json.dumps({"carry": [".whl", ".gpu_check"], "timeout_s": 600,
                      "command": "bash bench/gpu_check.sh --out $OUT"}, indent=1))


# ---------------------------------------------------------------- the steps
class Check:
    def __init__(self, out: Path, budget: float, smoke: bool):
        self.out, self.smoke, self.end = out, smoke, time.monotonic() + budget
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.runs = out / "runs"
        self.steps: list[dict] = []
        self.env = {**os.environ, "CI": "true", "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                    "ULMFIT_CACHE": str(out / "cache"),
                    **({"OMP_NUM_THREADS": "1"} if smoke else {})}  # two lanes of one thread each on the CPU

    def left(self) -> float:
        return self.end - time.monotonic()

    def begin(self, name: str, need: float, **fields) -> dict:
        """A step's record, appended to the summary's steps: marked skipped where less than `need` s of the
        budget is left."""
        step = {"name": name, **fields, "log": f"logs/{name}.log"}
        self.steps.append(step)
        if self.left() < need:
            step.update(status="skipped", why=f"{self.left():.0f} s of the budget left")
            print(f"-- {name}: skipped ({step['why']})", flush=True)
        return step

    def run(self, name: str, cmd: list, limit: float, need: float | None = None, parse=None) -> dict:
        """`cmd` with a time limit of `limit` s (cut to what is left), skipped when less than `need` s is left."""
        step = self.begin(name, need if need is not None else min(limit, 30), command=" ".join(map(str, cmd)))
        if step.get("status") == "skipped":
            return step
        t0 = time.monotonic()
        with open(self.out / step["log"], "w") as log:
            proc = subprocess.Popen(list(map(str, cmd)), stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                    cwd=ROOT, start_new_session=True)
            try:
                rc = proc.wait(timeout=max(1.0, min(limit, self.left())))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rc = None
        step["seconds"] = round(time.monotonic() - t0, 1)
        step["status"] = "timeout" if rc is None else "ok" if rc == 0 else f"exit {rc}"
        if rc == 0 and parse:
            try:
                step["result"] = parse()
            except Exception as e:  # a figure that cannot be read is a finding, not a crash of the check
                step.update(status="unreadable", why=f"{type(e).__name__}: {e}")
        if step["status"] != "ok":
            tail = (self.out / step["log"]).read_text(errors="replace").splitlines()[-6:]
            step["tail"] = tail
        print(f"-- {name}: {step['status']} in {step['seconds']} s", flush=True)
        return step

    def ulmfit(self, *args) -> list:
        return [PY, "-m", "ulmfit_cli", *map(str, args)]


def results(run_dir: Path) -> dict:
    r = json.loads((run_dir / "results.json").read_text())
    keep = ("valid_loss", "valid_accuracy", "test_accuracy", "classifier_test_accuracy", "test_micro_f1",
            "test_rmse", "baseline_test_accuracy", "blend_weight", "seconds", "precision", "device")
    return {k: r[k] for k in keep if k in r}


def speed_steps(c: Check, inputs: Path) -> None:
    if c.smoke:
        size, store, limit = ["--emb", "16", "--hid", "32", "--layers", "1", "--bptt", "16"], "store-tiny", 90
        batches = [("bs64", "8")]
    else:
        size, store, limit = ["--emb", "400", "--hid", "1152", "--layers", "3"], "store-full", 150
        batches = [("bs64", "64"), ("bs256", "256")]
    base = [PY, "bench/train_speed.py", "--store", inputs / store, "--epochs", "1", *size]
    for i, (tag, bs) in enumerate(batches):
        out = c.out / f"train_speed_{tag}.json"
        # the first batch size: also ulmfit in bf16 and fp32, and where its time goes (20 steps profiled)
        more = ["--also-precisions", "bf16,fp32", "--profile", "20"] if i == 0 else []
        c.run(f"train_speed_{tag}", [*base, "--bs", bs, *more, "--json", out], limit * (1.6 if more else 1),
              parse=lambda out=out: json.loads(out.read_text()))


def path_steps(c: Check, inputs: Path) -> None:
    """Every training path once, tiny, under run.precision: auto (the default), on the check's device."""
    tiny = ["-c", "configs/tiny.yaml", "--set", "run.precision=auto"]
    tasks, lm, ft = inputs / "tasks.csv", c.runs / "lm", c.runs / "ft"
    clf_base = [*tiny, "--set", f"data.train={tasks}", "--set", f"init.from_run={ft}",
                "--set", "train.stages=[{freeze_to: -1, epochs: 1}, {freeze_to: 0, epochs: 1}]"]
    lm_args = tiny_lm_args(inputs)
    c.run("pretrain", c.ulmfit("pretrain", *lm_args, "--run-dir", lm), 120, parse=lambda: results(lm))
    c.run("finetune_lm", c.ulmfit("finetune-lm", *tiny, "--set", f"data.train={tasks}", "--set",
                                  f"init.from_run={lm}", "--run-dir", ft), 120, parse=lambda: results(ft))
    clfs = {"single_label": [], "multi_label": ["--set", "data.label_col=tags", "--set", "data.label_delim=;"],
            "regression": ["--set", "data.task=regression", "--set", "data.label_col=score"]}
    for task, extra in clfs.items():
        run_dir = c.runs / f"clf-{task}"
        c.run(f"train_clf_{task}", c.ulmfit("train-clf", *clf_base, *extra, "--run-dir", run_dir), 150,
              parse=lambda run_dir=run_dir: results(run_dir))
    bwd = c.runs / "lm-bwd"  # a backward LM, then a forward and a backward classifier (an ensemble)
    c.run("pretrain_backward", c.ulmfit("pretrain", *lm_args, "--set", "train.epochs=1", "--set",
                                        "data.backwards=true", "--run-dir", bwd), 150, parse=lambda: results(bwd))
    pair = c.runs / "ft-both"
    c.run("finetune_lm_directions_both", c.ulmfit("finetune-lm", *tiny, "--set", f"data.train={tasks}", "--set",
                                                  f"init.from_run={lm}", "--set", f"init.from_run_backward={bwd}",
                                                  "--directions", "both", "--run-dir", pair), 150,
          parse=lambda: sorted(p.name for p in pair.iterdir()))
    c.run("train_clf_directions_both", c.ulmfit("train-clf", *clf_base, "--set", f"init.from_run={pair}",
                                                "--directions", "both", "--run-dir", c.runs / "clf-both"), 200,
          parse=lambda: sorted(p.name for p in (c.runs / "clf-both").iterdir()))
    resume_step(c, lm_args, lm)
    clf = c.runs / "clf-single_label"
    c.run("predict", c.ulmfit("predict", "--model", clf, "--input", tasks, "--output", c.out / "predictions.csv"),
          90, parse=lambda: {"rows": sum(1 for _ in open(c.out / "predictions.csv")) - 1})
    c.run("evaluate", c.ulmfit("evaluate", "--model", clf, "--input", tasks, "--output", c.runs / "eval",
                               "--no-explain"), 120, parse=lambda: sorted(p.name for p in (c.runs / "eval").iterdir()))
    c.run("generate", c.ulmfit("generate", "--run-dir", lm, "--prompt", "The history of", "--n-words", "12",
                               "--seed", "0"), 60, parse=lambda: (c.out / "logs" / "generate.log").read_text()[-300:])
    bundle = c.runs / "onnx"
    c.run("export_onnx", c.ulmfit("export", "--model", clf, "--format", "onnx", "--output", bundle), 120,
          parse=lambda: json.loads((bundle / "card.json").read_text())["export"])
    serve_step(c, clf)


def tiny_lm_args(inputs: Path) -> list:
    return ["-c", "configs/tiny.yaml", "--set", "run.precision=auto", "--set", f"data.source={inputs / 'store-tiny'}",
            "--set", "data.max_vocab=2000", "--set", "train.epochs=2", "--set", "train.checkpoint_every=3"]


def resume_step(c: Check, lm_args: list, reference: Path) -> None:
    """Killed (SIGKILL) after its first mid-epoch checkpoint, then `--resume`: the same schedule to the end,
    and how far its weights are from the uninterrupted run's (bitwise on the CPU; cuDNN may differ a little)."""
    run_dir = c.runs / "lm-resumed"
    staging = run_dir.parent / f".{run_dir.name}.partial"
    step = c.begin("resume_after_kill", 60)
    if step.get("status") == "skipped":
        return
    t0 = time.monotonic()
    with open(c.out / step["log"], "w") as log:
        proc = subprocess.Popen([PY, "tests/faults.py", "--pause-after-checkpoint", "60", "pretrain", *lm_args,
                                 "--run-dir", run_dir], stdout=log, stderr=subprocess.STDOUT, env=c.env, cwd=ROOT)
        end = time.monotonic() + min(120, c.left())
        while not (staging / "checkpoints" / "last.pt").exists() and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.1)
        proc.kill()
        proc.wait()
    killed = (staging / "checkpoints" / "last.pt").exists()
    step.update(status="ok" if killed else "no checkpoint to kill after", seconds=round(time.monotonic() - t0, 1))
    if not killed:
        return

    def compare() -> dict:
        import torch
        a = torch.load(reference / "lm.pth", weights_only=True, map_location="cpu")
        b = torch.load(run_dir / "lm.pth", weights_only=True, map_location="cpu")
        diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
        log = (c.out / "logs" / "resume.log").read_text()
        return {"max_abs_weight_diff": diff, "resumed_mid_epoch": "step 3" in log,
                "valid_loss": results(run_dir)["valid_loss"],
                "uninterrupted_valid_loss": results(reference)["valid_loss"]}
    c.run("resume", c.ulmfit("pretrain", "--run-dir", run_dir, "--resume"), 120, parse=compare)


def serve_step(c: Check, clf: Path) -> None:
    """`ulmfit serve` as a subprocess on 127.0.0.1, one prediction over HTTP, stopped."""
    step = c.begin("serve", 45)
    if step.get("status") == "skipped":
        return
    port = _free_port()
    t0 = time.monotonic()
    with open(c.out / step["log"], "w") as log:
        proc = subprocess.Popen(c.ulmfit("serve", "--model", clf, "--host", "127.0.0.1", "--port", port), stdout=log,
                                stderr=subprocess.STDOUT, env=c.env, cwd=ROOT)
        url, answer, end = f"http://127.0.0.1:{port}", None, time.monotonic() + min(90, c.left())
        try:
            while answer is None and proc.poll() is None and time.monotonic() < end:
                try:
                    urllib.request.urlopen(f"{url}/health/ready", timeout=2)
                    req = urllib.request.Request(f"{url}/v1/predict", method="POST",
                                                 data=json.dumps({"texts": ["What is the capital of Peru ?"]}).encode(),
                                                 headers={"Content-Type": "application/json"})
                    answer = json.loads(urllib.request.urlopen(req, timeout=30).read())
                except OSError:
                    time.sleep(0.3)
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    step.update(status="ok" if answer else "no answer", seconds=round(time.monotonic() - t0, 1),
                **({"result": answer} if answer else {}))
    print(f"-- serve: {step['status']}", flush=True)


def _free_port() -> int:
    """A free port on 127.0.0.1 (bench/serve_load.py's free_port imports httpx, which the device lacks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_step(c: Check, lm_args: list) -> None:
    """Two processes (torchrun) on this machine: NCCL on a GPU, Gloo on the CPU."""
    import torch
    run_dir = c.runs / "lm-ddp"
    cmd = [PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", _free_port(), "-m", "ulmfit_cli", "pretrain", *lm_args, "--run-dir", run_dir]
    step = c.run("ddp_2_processes", [*cmd, "--set", "train.epochs=1"], 150, parse=lambda: results(run_dir))
    if torch.cuda.is_available() and torch.cuda.device_count() < 2:
        step["note"] = "one GPU: two processes would share it, which NCCL refuses; the run must say so clearly"


def pipeline_steps(c: Check, inputs: Path) -> None:
    """Full size (AWD-LSTM 400/1152/3): pretrain 10 epochs on the excerpt, fine-tune and classify TREC-6 with
    their configs, evaluate on its test set. --smoke: the same commands, shrunk by configs/tiny.yaml."""
    lm, ft, clf, report = (c.runs / f"full-{n}" for n in ("lm", "ft", "clf", "eval"))
    store, epochs, lm_tiny, ft_tiny, clf_tiny, eval_tiny = inputs / "store-full", "10", [], [], [], []
    if c.smoke:
        store, epochs, tiny = inputs / "store-tiny", "1", ["-c", "configs/tiny.yaml"]
        lm_tiny = [*tiny, "--set", "data.max_vocab=2000"]
        few = ["--set", f"data.train={inputs / 'tasks.csv'}"]  # 240 of TREC-6's questions
        ft_tiny = [*tiny, *few, "--set", "train.epochs=1"]
        clf_tiny = [*tiny, *few, "--set", "train.stages=[{freeze_to: -1, epochs: 1}]", "--set", "data.baseline=false"]
        eval_tiny = ["--no-baseline"]
    c.run("full_pretrain", c.ulmfit("pretrain", "-c", "configs/wikitext103.yaml", *lm_tiny, "--set",
                                    f"data.source={store}", "--set", f"train.epochs={epochs}", "--run-dir", lm),
          240, need=60, parse=lambda: results(lm))
    c.run("full_finetune_lm", c.ulmfit("finetune-lm", "-c", "configs/trec6/finetune-lm.yaml", *ft_tiny, "--set",
                                       f"init.from_run={lm}", "--run-dir", ft), 150, need=45, parse=lambda: results(ft))
    c.run("full_train_clf", c.ulmfit("train-clf", "-c", "configs/trec6/train-clf.yaml", *clf_tiny, "--set",
                                     f"init.from_run={ft}", "--run-dir", clf), 150, need=45, parse=lambda: results(clf))
    c.run("full_evaluate", c.ulmfit("evaluate", "--model", clf, "--input", "data/trec6/test.csv", "--output", report,
                                    "--no-explain", *eval_tiny), 90, need=20,
          parse=lambda: {k: v for k, v in json.loads((report / "report.json").read_text()).items()
                         if k in ("accuracy", "macro_f1", "n", "baseline")})


def predict_speed_step(c: Check) -> None:
    """On the full-size classifier (--smoke: its tiny stand-in), else the tiny single-label one."""
    import torch
    model = c.runs / ("full-clf" if (c.runs / "full-clf" / "model.pth").is_file() else "clf-single_label")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    c.run("predict_speed", [PY, "bench/predict_speed.py", "--model", model, "--device", device, "--quick"], 120,
          parse=lambda: (c.out / "logs" / "predict_speed.log").read_text()[-1500:])


def summarize(c: Check, started: float) -> dict:
    import torch
    by = {s["name"]: s for s in c.steps}
    ratios = by.get("train_speed_bs64", {}).get("result", {}).get("ratios", {})
    targets = {}
    if ratios:
        targets = {
            "ulmfit_over_stock_bs64": {"value": ratios.get("ulmfit_over_stock"),
                                       "target": TARGETS["ulmfit_over_stock_bs64"]},
            "ulmfit_over_bare_bs64": {"value": ratios.get("ulmfit_over_bare"), "target": TARGETS["ulmfit_over_bare"]},
            "valid_loss_ulmfit_over_stock": {"value": ratios.get("valid_loss_ulmfit_over_stock"),
                                             "target": f"within {TARGETS['valid_loss_within']:.0%}"}}
        for name, t in targets.items():
            v = t["value"]
            t["met"] = None if v is None else (abs(v - 1) <= TARGETS["valid_loss_within"] if name.startswith("valid")
                                               else v >= t["target"])
    full = by.get("full_train_clf", {}).get("result", {})
    return {
        "mode": "smoke" if c.smoke else "full", "seconds": round(time.monotonic() - started, 1),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores",
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                     **{m: _version(m) for m in ("fastai", "spacy", "onnxruntime")}},
        "targets": targets,
        "pipeline": {"test_accuracy": full.get("test_accuracy"), "stock_fastai_test_accuracy": STOCK_TREC6_TEST,
                     "wall_seconds": {s: by[s].get("seconds") for s in ("full_pretrain", "full_finetune_lm",
                                                                        "full_train_clf", "full_evaluate") if s in by}},
        "failed": [s["name"] for s in c.steps if s.get("status") not in ("ok", "skipped")],
        "skipped": [s["name"] for s in c.steps if s.get("status") == "skipped"],
        "steps": c.steps,
    }


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(module)
    except PackageNotFoundError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prepare", action="store_true", help="build the inputs into .gpu_check/ and say how to call")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (inputs built first, into --out)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "gpu-check-out")))
    ap.add_argument("--budget", type=float, default=None, help="seconds for every step together "
                                                               "(default 520; --smoke 170)")
    ap.add_argument("--lanes", type=int, choices=(1, 2), default=2, help="--smoke: steps in 1 or 2 lanes at once")
    args = ap.parse_args()
    if args.prepare:
        prepare_inputs(INPUTS, smoke=False)
        device_call(INPUTS)
        return
    started = time.monotonic()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    inputs = INPUTS
    if args.smoke:
        inputs = out / "inputs"
        prepare_inputs(inputs, smoke=True)
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # the CPU, even where a GPU is
    elif not (inputs / "store-full" / "COMPLETE").is_file():
        sys.exit(f"{inputs}: no token stores; run `python bench/gpu_check.py --prepare` where spaCy is, and carry "
                 f".gpu_check")
    budget = args.budget or (170 if args.smoke else 520)
    c = Check(out, budget - (time.monotonic() - started), args.smoke)
    if args.smoke and args.lanes == 2:  # two lanes, one thread each: CPU timings mean nothing here; 3 minutes
        import threading
        lane = threading.Thread(target=lambda: (speed_steps(c, inputs), pipeline_steps(c, inputs),
                                                ddp_step(c, tiny_lm_args(inputs)), predict_speed_step(c)))
        lane.start()
        path_steps(c, inputs)
        lane.join()
    else:  # one at a time, so that no step's timing shares the GPU
        speed_steps(c, inputs)
        path_steps(c, inputs)
        ddp_step(c, tiny_lm_args(inputs))
        pipeline_steps(c, inputs)
        predict_speed_step(c)
    summary = summarize(c, started)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"\n{summary['device']}: {len(c.steps)} steps in {summary['seconds']} s; failed: "
          f"{', '.join(summary['failed']) or 'none'}; skipped: {', '.join(summary['skipped']) or 'none'}")
    for name, t in summary["targets"].items():
        print(f"  {name}: {t['value']} (target {t['target']}): {'met' if t['met'] else 'NOT met'}")
    print(f"summary: {out / 'summary.json'}")
    sys.exit(1 if summary["failed"] else 0)  # skipped steps are not failures: the budget ran out


if __name__ == "__main__":
    main()
