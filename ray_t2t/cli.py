"""The `ray-t2t` command.

    ray-t2t validate CONFIG [method=NAME] [section.key=value ...] [--explain [--section NAME]]
    ray-t2t validate --explain [--section NAME]      # every config field, its type, default and meaning
    ray-t2t data CONFIG [section.key=value ...] [--rebuild] [--show N]
    ray-t2t train CONFIG [method=NAME] [section.key=value ...]
    ray-t2t teacher CONFIG [section.key=value ...]
    ray-t2t report RUN_DIR [--target 'wer <= 0.5' | --target-relative 0.95] [--confidence 0.95] [--no-plots]

Errors in the user's input (config, data) print one clear message and exit with status 2.
"""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import sys
import time
import traceback
from typing import TYPE_CHECKING

from ray_t2t import __version__, console
from ray_t2t.errors import UserError

if TYPE_CHECKING:
    from ray_t2t.config.experiment import ExperimentConfig

EXIT_USER_ERROR = 2
VERBOSE_HELP = (
    "show Ray's, Ray Data's, transformers' and the workers' output here (by default it goes to a log "
    "file in the run folder, and only ray-t2t's own lines, progress and verdict show)"
)

# At exit, move every object to gc's permanent generation, so the interpreter's final garbage
# collections skip them. Registered as this module is imported, before Ray, torch and the rest, so it
# runs after their exit handlers (last registered, first run; Ray's shutdown among them). With torch,
# transformers, DeepSpeed and Ray imported those collections took ~1.4 s of every command's exit on a
# 2-core machine, ~0.15 s with this. Module teardown and reference-counted clean-up still run; only
# objects in reference cycles are left to the operating system, as the process ends anyway.
atexit.register(gc.freeze)


def _add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("config", nargs=None if required else "?", help="experiment YAML file")
    parser.add_argument(
        "overrides", nargs="*", metavar="section.key=value", help="override config values, e.g. training.max_steps=100"
    )


def _capture_output(args: argparse.Namespace, cfg: ExperimentConfig) -> None:
    """Send the libraries' and workers' output to a log file in the run folder (not with -v)."""
    if args.verbose:
        return
    from pathlib import Path

    name = f"{args.command}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    if isinstance(cfg.experiment_dir, Path):
        path, remote = cfg.experiment_dir / "logs" / name, None
    else:  # an object store: written locally, copied into the run folder when the command ends
        import tempfile
        import uuid

        remote = cfg.experiment_dir / "logs" / name
        path = Path(tempfile.gettempdir()) / f"ray_t2t_log_{uuid.uuid4().hex[:12]}" / name
    console.capture(path, upload_to=remote)
    console.say(f"log: {remote or path} (Ray's, Ray Data's, transformers' and the workers' output; -v shows it here)")


def cmd_validate(args: argparse.Namespace) -> int:
    from ray_t2t.config.experiment import choose_method, config_hash, load_config
    from ray_t2t.config.explain import explain

    cfg = None
    label, overrides = _method_and_overrides(args.overrides)
    if args.config is not None:
        if "=" in args.config:
            raise UserError(f"expected a config file before the overrides, got {args.config!r}")
        cfg = load_config(args.config, overrides)
        if label is not None:  # the exact command line of `train` validates
            choose_method(cfg, label)
    elif not args.explain:
        raise UserError("give a CONFIG to validate, or --explain to list every config field")
    if cfg is not None:
        from ray_t2t.preflight import check_model_paths

        check_model_paths(cfg)
    if cfg is not None and cfg.deepspeed.config_overrides:  # DeepSpeed's own check (imports torch: only then)
        from ray_t2t.training.launcher import check_deepspeed_config

        check_deepspeed_config(cfg, cfg.scaling.num_workers)
    if cfg is not None and (cfg.tune.space or cfg.tune.search == "optuna"):  # what a sweep would refuse, refused now
        from ray_t2t.sweeps import check_sweep

        check_sweep(cfg)
    if args.explain:
        print(explain(cfg, args.section))
        return 0
    models = cfg.models
    teachers = ", ".join(spec.preset or spec.name_or_path for spec in models.teachers) or "none"
    methods = label or ", ".join(m.label or m.name for m in cfg.methods) or "none"
    print(f"{args.config}: valid (config hash {config_hash(cfg)})")
    print(f"  experiment  {cfg.experiment_dir}")
    print(f"  task        {cfg.data.task}")
    print(f"  student     {models.student.preset or models.student.name_or_path}; teacher: {teachers}")
    print(f"  methods     {methods}")
    print(
        f"  eval        {cfg.eval.metric}"
        + (
            f", target {cfg.eval.target.metric} {cfg.eval.target.op} {cfg.eval.target.value:g}"
            if cfg.eval.target
            else ""
        )
    )
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from ray_t2t.config.experiment import load_config
    from ray_t2t.data import SPLITS, prepare_data
    from ray_t2t.preflight import check_storage_writable

    cfg = load_config(args.config, args.overrides)
    check_storage_writable(cfg)
    prepared = prepare_data(cfg, rebuild=args.rebuild, log=lambda message: print(message, flush=True))
    summary = prepared.summary
    splits = {name: summary["splits"][name] for name in SPLITS}
    tok = summary["tokenizer"]
    if tok["kind"] == "built":
        tok_text = f"built from train: {tok['source_level']} source, {tok['target_level']} target"
    else:
        tok_text = f"pretrained {tok['name_or_path']}"
    print(f"task: {summary['task']}")
    print(f"tokenizer: {tok_text}, vocabulary {tok['vocab_size']:,}")
    print(
        f"{'split':<12}{'examples':>10}{'source tokens':>15}{'target tokens':>15}{'max source':>12}{'max target':>12}"
    )
    for name, split in splits.items():
        print(
            f"{name:<12}{split['examples']:>10,}{split['source_tokens']:>15,}{split['target_tokens']:>15,}"
            f"{split['max_source_tokens']:>12}{split['max_target_tokens']:>12}"
        )
    for name, split in splits.items():
        cut = split["truncated"]
        if cut["source"] or cut["target"]:
            print(f"truncated in {name}: {cut['source']:,} source, {cut['target']:,} target sequences")
    for name, split in splits.items():
        print(f"examples from {name}:")
        for source, target in split["samples"][: args.show]:
            print(f"  {source!r} -> {target!r}")
    print(f"data: {prepared.path} ({'reused' if prepared.reused else 'built'})")
    return 0


def _method_and_overrides(items: list[str]) -> tuple[str | None, list[str]]:
    """`method=NAME` (which of the config's methods `train` runs) apart from the section.key=value
    overrides."""
    label, overrides = None, []
    for item in items:
        if item.startswith("method="):
            label = item.removeprefix("method=")
        else:
            overrides.append(item)
    return label, overrides


def cmd_train(args: argparse.Namespace) -> int:
    from ray_t2t.config.experiment import choose_method, load_config
    from ray_t2t.training.launcher import summarize, train

    label, overrides = _method_and_overrides(args.overrides)
    cfg = load_config(args.config, overrides)
    choose_method(cfg, label)  # a wrong method= is refused before anything is written
    _capture_output(args, cfg)
    record = train(cfg, label, log=console.say)
    console.say(summarize(record))
    return 0


def cmd_teacher(args: argparse.Namespace) -> int:
    from ray_t2t.config.experiment import load_config
    from ray_t2t.soft_targets import produce_soft_targets

    cfg = load_config(args.config, args.overrides)
    _capture_output(args, cfg)
    for index in range(max(1, len(cfg.models.teachers))):  # every teacher (multi-teacher distillation)
        manifest = produce_soft_targets(cfg, log=console.say, teacher_index=index)
        teacher = manifest["teacher"]
        kind = "pre-existing teacher" if teacher["pre_existing"] else f"trained by run '{teacher['label']}'"
        console.say(f"teacher: {teacher['path']} ({kind})")
        console.say(
            f"soft targets: {manifest['rows']:,} examples in {len(manifest['shards'])} shard(s), "
            f"{manifest['target_tokens']:,} target tokens, {manifest['bytes'] / 1e6:.2f} MB, "
            f"{manifest['bytes_per_target_token']:.1f} bytes per target token (k={manifest['identity']['k']})"
        )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from ray_t2t.config.experiment import load_config
    from ray_t2t.sweeps import run_sweep, summarize_sweep

    cfg = load_config(args.config, args.overrides)
    _capture_output(args, cfg)
    records = run_sweep(cfg, log=console.say)
    console.say(f"sweep: {sum(r.get('status') == 'finished' for r in records)} of {len(records)} trial(s) finished")
    console.say(summarize_sweep(records))
    console.say(f"records: {cfg.experiment_dir / 'sweep'}; compare them with `ray-t2t report {cfg.experiment_dir}`")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ray_t2t.config.experiment import load_config
    from ray_t2t.pipeline import run_pipeline

    cfg = load_config(args.config, args.overrides)
    _capture_output(args, cfg)
    report = run_pipeline(cfg, log=console.say)
    console.say(report.summary)
    return 0


def cmd_inference(args: argparse.Namespace) -> int:
    from ray_t2t.config.experiment import load_config
    from ray_t2t.inference import measure_experiment

    cfg = load_config(args.config, args.overrides)
    _capture_output(args, cfg)
    written = measure_experiment(cfg, log=console.say)
    console.say(f"inference: {len(written)} model(s) measured; `ray-t2t report {cfg.experiment_dir}` shows them")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ray_t2t.reporting import build_report

    report = build_report(
        args.run_dir,
        target=args.target,
        target_relative=args.target_relative,
        confidence=args.confidence,
        plots=not args.no_plots,
    )
    print(report.summary)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ray-t2t",
        description="Measure what each way of training a text-to-text model costs to reach a quality target, on Ray.",
    )
    parser.add_argument("--version", action="version", version=f"ray-t2t {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # -v after the command too (ray-t2t run -v CONFIG); SUPPRESS keeps a -v given before it
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)

    validate = commands.add_parser(
        "validate",
        help="check a config (unknown keys, types, ranges); --explain lists every field",
        description="Check an experiment config. With --explain, print every field with its type, default, "
        "description (and value, when a CONFIG is given).",
    )
    _add_config_arguments(validate, required=False)
    validate.add_argument("--explain", action="store_true", help="print every config field and what it means")
    validate.add_argument("--section", help="with --explain: only this section, e.g. data or deepspeed")
    validate.set_defaults(run=cmd_validate)

    data = commands.add_parser(
        "data",
        help="prepare and cache the tokenized splits; print sizes, token counts and examples",
        description="Load the task, split it (seeded), build or load the tokenizer, tokenize, and cache the "
        "result under <storage_path>/<run.name>/data/. Reuses the cache when nothing changed.",
    )
    _add_config_arguments(data)
    data.add_argument("--rebuild", action="store_true", help="rebuild even if a cache exists")
    data.add_argument("--show", type=int, default=3, metavar="N", help="examples to print per split (default 3)")
    data.set_defaults(run=cmd_data)

    train = commands.add_parser(
        "train",
        parents=[verbose],
        help="train one method on Ray Train + DeepSpeed and write its run record",
        description="Train one of the config's methods (method=NAME: its label or name) on Ray Train with "
        "DeepSpeed. Starts a local Ray (none for a run in scaling.local_mode, which trains in this process), "
        "or joins the cluster in RAY_ADDRESS. Rerunning the same command "
        "reuses a finished run and resumes an unfinished one from its last checkpoint.",
    )
    _add_config_arguments(train)
    train.set_defaults(run=cmd_train)

    teacher = commands.add_parser(
        "teacher",
        parents=[verbose],
        help="compute the teacher's top-k soft targets on Ray Data (shards + manifest)",
        description="Run the teacher over the training split on Ray Data (an actor pool of replicas) and "
        "store its top-k token ids and log-probabilities per target position as checksummed Parquet "
        "shards with a manifest. A rerun computes only missing shards; a finished set is reused.",
    )
    _add_config_arguments(teacher)
    teacher.set_defaults(run=cmd_teacher)

    sweep = commands.add_parser(
        "sweep",
        parents=[verbose],
        help="Ray Tune over methods x hyperparameters x seeds, each trial a Ray Train run",
        description="Train every trial of the config's `tune` section (methods, space, seeds; grid or random "
        "search; optional ASHA) on Ray Tune, each trial a TorchTrainer run of the shared loop, and write "
        "its record under <storage_path>/<run.name>/sweep/. Rerunning restores the sweep: finished trials "
        "are kept.",
    )
    _add_config_arguments(sweep)
    sweep.set_defaults(run=cmd_sweep)

    inference = commands.add_parser(
        "inference",
        parents=[verbose],
        help="measure the inference speed of every exported model of the experiment, one at a time",
        description="Decode a fixed set of test sources to a fixed output length with each exported model of the "
        "experiment's finished runs, one model at a time on cores (or a GPU) of its own: a warm-up, then the median "
        "of `inference.repeats` passes at each batch size, into <storage_path>/<run.name>/inference/. Models of one "
        "architecture and size are measured once; measured ones are reused. `ray-t2t run` does this after the sweep.",
    )
    _add_config_arguments(inference)
    inference.set_defaults(run=cmd_inference)

    run = commands.add_parser(
        "run",
        parents=[verbose],
        help="the whole pipeline: data, teacher and pretraining, soft targets, sweep, inference speed, report",
        description="Prepare the data, train the teacher and pretraining runs, compute soft targets, sweep "
        "every other method over its space and seeds, measure the exported models' inference speed, and write "
        "the report; each stage is reused when complete. Ends with the verdict: per size class of student, "
        "which method is fastest and cheapest to the target and best in final quality, named only where a "
        "Welch's t-test over the seeds supports it, and after how many students a teacher pays off.",
    )
    _add_config_arguments(run)
    run.set_defaults(run=cmd_run)

    report = commands.add_parser(
        "report",
        help="compare the experiment's runs from their run records: tables, plots, report.md/.html",
        description="Read every run record of an experiment (runs/, sweep/, soft_targets/ under RUN_DIR) and "
        "write RUN_DIR/report/: report.md, report.html, report.json and PNG plots. It opens with the verdict "
        "per size class of exported model; groups of runs (seeds) are shown as mean ± confidence interval, "
        "winners are named only where Welch's t-test supports them, and distillation is charged for its teacher.",
    )
    report.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        help="the experiment folder, <storage_path>/<run.name> (a path or an s3:// / gs:// URI)",
    )
    report.add_argument(
        "--target",
        metavar="'METRIC OP VALUE'",
        help="quality target for time to target, e.g. 'wer <= 0.5' (default: the runs' eval.target)",
    )
    report.add_argument(
        "--target-relative",
        type=float,
        metavar="F",
        help="target = F of the teacher's final test quality (lower-is-better: value <= teacher / F)",
    )
    report.add_argument(
        "--confidence",
        type=float,
        default=0.95,
        metavar="LEVEL",
        help="confidence level of the intervals over a group's runs (default 0.95)",
    )
    report.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    report.set_defaults(run=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as err:
        discard = console.discards_on_refusal()  # a new run folder: the refusal leaves none behind
        console.error(f"ray-t2t {args.command}: error: {err}" + ("" if discard else _see_log()))
        if console.log_path() is not None:
            _stop_ray()
        console.release(discard=discard)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        console.error("interrupted" + _see_log())
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception:
        if console.log_path() is None:
            raise
        console.error(traceback.format_exc().rstrip() + _see_log())  # in full, where the user sees it
        return 1
    finally:
        if console.log_path() is not None:
            _stop_ray()  # Ray prints its workers' last (deduplicated) lines as it stops: into the log, too
        console.release()


def _stop_ray() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def _see_log() -> str:
    path = console.log_path()
    return f"\n(everything the run printed: {path})" if path else ""


if __name__ == "__main__":
    sys.exit(main())
