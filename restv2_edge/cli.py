"""The ``restv2-edge`` command line. Owns progress display and turns errors into one line.

Heavy imports (torch, backends) happen inside each command, so ``--help`` stays fast. Its
length (a little over 600 lines) is the commands' option declarations, each validated at
parse time; display, option types, the targets command and bench live in ``cli_display``,
``cli_types``, ``cli_targets`` and ``restv2_edge.bench``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from restv2_edge.cli_display import (
    DEBUG,
    DEBUG_ENV,
    STEP,
    StepProgress,
    TrainDisplay,
    debugging,
    one_line,
    print_parity,
    unexpected_error_line,
)
from restv2_edge.cli_targets import float_precisions, option_readers, targets
from restv2_edge.cli_types import (
    POSITIVE_INT,
    FiniteFloat,
    FloatTriple,
    ImageSize,
    LazyChoice,
    OutputPath,
    ReportPath,
    device_option,
    sensitivity_target_choice,
    target_choice,
)
from restv2_edge.errors import RestV2EdgeError
from restv2_edge.publish import write_report
from restv2_edge.scale.address import ray_option
from restv2_edge.scale.cluster import DEFAULT_RETRIES
from restv2_edge.scale.shards import DEFAULT_SHARD_SIZE

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def parse_variant(value: str | None) -> Any:
    """T/S/B/L, a JSON file with a config, or inline JSON."""
    if value is None:
        return None
    if value.upper() in {"T", "S", "B", "L"}:
        return value.upper()
    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value)
        if not path.is_file():
            from restv2_edge.errors import ConfigError

            raise ConfigError(f"unknown variant {value!r}; choose T, S, B, L or a JSON config")
        text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        from restv2_edge.errors import ConfigError

        raise ConfigError(f"variant config is not valid JSON: {exc}") from None


def given(name: str) -> bool:
    """Whether the user set parameter ``name`` (command line or environment), not its default."""
    from click.core import ParameterSource

    source = click.get_current_context().get_parameter_source(name)
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def refuse_unused(names: list[str], why: str) -> None:
    """A usage error for the first of ``names`` the user gave although it would do nothing."""
    ctx = click.get_current_context()
    for name in names:
        if given(name):
            param = next(p for p in ctx.command.params if p.name == name)
            raise click.UsageError(f"{param.opts[0]} does nothing {why}")


def console():
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)  # a piped log keeps one line per message


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="restv2-edge", prog_name="restv2-edge")
@click.option("--debug", is_flag=True, envvar=DEBUG_ENV,
              help=f"Show the traceback of an unexpected error (or {DEBUG_ENV}=1).")  # fmt: skip
def main(debug: bool) -> None:
    """ResTv2 image classifiers for phones and edge devices: export, quantize, verify, benchmark."""
    if debug:
        DEBUG.set(True)


@main.command()
@click.option("--variant", default="T", show_default=True, help="T, S, B, L or a JSON config.")
@click.option("--image-size", type=ImageSize(), default=224, show_default=True)
@click.option("--num-classes", type=POSITIVE_INT, default=None)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(variant: str, image_size: int, num_classes: int | None, as_json: bool) -> None:
    """Parameters and multiply-accumulates per stage and in total."""
    from restv2_edge.complexity import complexity_report, render_report

    report = complexity_report(parse_variant(variant), image_size, num_classes)
    if as_json:
        click.echo(json.dumps(report))
    else:
        render_report(report, console())


@main.command()
@click.option("--data", required=True, type=click.Path(), help="ImageFolder directory or tar.")
@click.option("--split", default=None, help="Split folder inside --data (e.g. train).")
@click.option("--variant", default="T", show_default=True, help="T, S, B, L or a JSON config.")
@click.option("--image-size", type=ImageSize(), default=224, show_default=True)
@click.option("--epochs", type=POSITIVE_INT, default=30, show_default=True)
@click.option("--batch-size", type=POSITIVE_INT, default=128, show_default=True)
@click.option("--lr", type=FiniteFloat(0, low_open=True), default=2e-3, show_default=True)
@click.option("--weight-decay", type=FiniteFloat(0), default=0.05, show_default=True)
@click.option("--warmup-epochs", type=FiniteFloat(0), default=2.0, show_default=True)
@click.option("--label-smoothing", type=FiniteFloat(0, 0.99), default=0.1, show_default=True)
@click.option(
    "--min-scale",
    type=FiniteFloat(0, 1, low_open=True),
    default=0.25,
    show_default=True,
    help="Smallest crop area of the random resized crop.",
)
@click.option(
    "--crop-pct",
    type=FiniteFloat(0, 1, low_open=True),
    default=0.875,
    show_default=True,
    help="Eval crop fraction recorded in the checkpoint (1.0 for tiny images).",
)
@click.option("--weights", type=click.Path(), default=None, help="Initial weights (fine-tuning).")
@click.option("--val-data", type=click.Path(), default=None)
@click.option("--val-split", default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=POSITIVE_INT, default=None)
@click.option("--limit", type=POSITIVE_INT, default=None, help="Use only the first N images.")
@click.option("--resume", is_flag=True, help="Continue from OUTPUT.train-state.pt.")
@click.option("--output", required=True, type=OutputPath(dir_okay=False),
              help="Checkpoint (.safetensors).")  # fmt: skip
@click.option("--force", is_flag=True, help="Replace an existing output checkpoint.")
def train(**options: Any) -> None:
    """Train or fine-tune ResTv2 on labelled images; writes the own checkpoint format."""
    from restv2_edge.publish import check_output
    from restv2_edge.train import TrainSettings
    from restv2_edge.train import train as run_training

    options["variant"] = parse_variant(options["variant"])
    settings = TrainSettings(**options)
    check_output(settings.output, settings.force)
    out = console()
    with TrainDisplay(out) as display:
        path = run_training(settings, display.update)
    out.print(f"wrote {path}")


@main.command()
@click.argument("artifact", type=click.Path())
@click.option("--output", required=True, type=OutputPath(), help="Folder for the golden vectors.")
@click.option("--images", type=click.IntRange(min=1), default=4, show_default=True)
@click.option(
    "--data",
    type=click.Path(),
    default=None,
    help="Photo folder (default: the shared ImageNet sample).",
)
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
def golden(artifact: str, output: str, images: int, data: str | None, force: bool) -> None:
    """Golden vectors for the demo apps: photos, input tensors and the artifact's top-5
    (a features artifact: its output maps)."""
    from restv2_edge.golden import write_golden

    path, index = write_golden(artifact, output, images, data, force)
    for entry in index["images"]:
        if "outputs" in entry:  # a features artifact: its maps' shapes
            shapes = ", ".join(f"{o['name']} {tuple(o['shape'])}" for o in entry["outputs"])
            click.echo(f"{entry['photo']}: {shapes}")
            continue
        best = entry["top5"][0]
        click.echo(f"{entry['photo']}: {best['label']} ({best['probability']:.2%})")
    console().print(f"wrote {path} ({len(index['images'])} images, {index['artifact']['runner']})")


from restv2_edge.bench.cli import bench  # noqa: E402  (the bench commands live in their package)

main.add_command(bench)
main.add_command(targets)

from restv2_edge.cli_profile import profile  # noqa: E402  (per-op profiles: cli_profile.py)

main.add_command(profile)


@main.command()
@click.option("--data", type=click.Path(), default=None, help="Image folder or tar to draw from.")
@click.option("--size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Number of images.")  # fmt: skip
@click.option("--image-size", type=ImageSize(pairs=True), default=None,
              help="Input resolution: a side (center crop) or HxW (resized straight to "
              "height x width); default: the checkpoint's, else 224.")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--weights", type=click.Path(), default=None,
              help="Checkpoint (own format: its preprocessing); --sensitivity.")  # fmt: skip
@click.option("--crop-pct", type=FiniteFloat(0, 1, low_open=True), default=None,
              help="Default 0.875 or the checkpoint's.")  # fmt: skip
@click.option("--mean", type=FloatTriple(), default=None,
              help="Three comma-separated floats (default ImageNet).")  # fmt: skip
@click.option("--std", type=FloatTriple(positive=True), default=None,
              help="Three comma-separated positive floats (default ImageNet).")  # fmt: skip
@click.option("--output", type=OutputPath(), default=None, help="Calibration set folder.")
@click.option("--force", is_flag=True, help="Replace an existing calibration set folder.")
@click.option("--sensitivity", is_flag=True,
              help="Rank layers by the error their INT8 quantization alone causes.")  # fmt: skip
@click.option("--calib", type=click.Path(), default=None,
              help="--sensitivity: an existing calibration set instead of --data.")  # fmt: skip
@click.option("--target", type=sensitivity_target_choice(), default=None,
              help="--sensitivity: whose quantizer to probe (default: the first target "
              "offering it).")  # fmt: skip
@click.option("--variant", default=None, help="--sensitivity: T, S, B, L or a JSON config.")
@click.option("--top", type=POSITIVE_INT, default=10, show_default=True,
              help="--sensitivity: rows shown.")  # fmt: skip
@click.option("--json", "json_file", type=ReportPath(), default=None,
              help="--sensitivity: write the ranking.")  # fmt: skip
def calibrate(**o: Any) -> None:
    """Build a reusable INT8 calibration set (or, with --sensitivity, rank layers)."""
    import warnings

    from restv2_edge.calibration.dataset import (
        build_calibration_set,
        calibration_preprocessing,
        load_calibration_set,
        save_calibration_set,
    )
    from restv2_edge.publish import check_output

    out = console()
    if not o["sensitivity"]:
        refuse_unused(["calib", "target", "variant", "top", "json_file"], "without --sensitivity")
    if o["output"] and not o["calib"]:
        check_output(o["output"], o["force"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if o["calib"]:
            calib = load_calibration_set(o["calib"])
        else:
            if not o["data"]:
                raise click.UsageError("give --data (or --calib with --sensitivity)")
            pre = calibration_preprocessing(
                o["weights"], o["image_size"], o["crop_pct"], o["mean"], o["std"]
            )
            hw = o["image_size"] if isinstance(o["image_size"], tuple) else None
            with out.status(f"calibration set: {o['size']} images from {o['data']}..."):
                calib = build_calibration_set(o["data"], o["size"], pre, o["seed"], hw)
            if o["output"]:
                save_calibration_set(calib, o["output"], o["force"])
            elif not o["sensitivity"]:
                raise click.UsageError("give --output for the calibration set")
    for warning in caught:
        out.print(f"[yellow]warning:[/] {warning.message}")
    if calib.skipped:
        out.print(f"skipped {len(calib.skipped)} corrupt: {', '.join(calib.skipped[:3])}")
    if o["output"] and not o["calib"]:
        size, digest = f"{calib.size} images, {calib.describe()}", calib.content_hash[:19]
        out.print(f"wrote {o['output']} ({size}, {digest})")
    if o["sensitivity"]:
        from restv2_edge.calibration.sensitivity import render_sensitivity, run_sensitivity

        if not o["weights"]:
            raise click.UsageError("--sensitivity needs --weights")
        with out.status("sensitivity..."):
            target = o["target"] or sensitivity_target_choice().choices[0]
            report = run_sensitivity(target, parse_variant(o["variant"]), o["weights"], calib)
        if o["json_file"]:
            write_report(o["json_file"], json.dumps(report, indent=2) + "\n")
        render_sensitivity(report, o["top"], click.echo)


#: export options that only some targets read (their descriptor or INT8 recipe lists them)
TARGET_OPTIONS = ["deployment_target", "compute_units", "calib_method", "weights_only"]
#: export options that only an INT8 export reads
INT8_OPTIONS = [
    "calib", "calib_data", "calib_size", "calib_method", "weights_only", "max_drop",
    "accuracy_data",
]  # fmt: skip


def build_model(
    variant: str | None,
    image_size: Any,
    weights: str | None,
    out: Any,
    head: str = "classifier",
):
    """The PyTorch model to export (``head``: classifier or features); random weights come
    with a loud warning."""
    from restv2_edge.factory import create_model

    if weights is None:
        out.print(
            "[bold red]WARNING: no --weights given: exporting RANDOMLY INITIALIZED weights. "
            "Use such an artifact for pipeline tests only.[/]"
        )
    return create_model(parse_variant(variant), image_size, None, weights, head=head)


@main.command()
@click.option("--target", required=True, type=target_choice())
@click.option(
    "--variant",
    default=None,
    help="T, S, B, L or a JSON config (default T, or the checkpoint's own config).",
)
@click.option(
    "--image-size",
    type=ImageSize(pairs=True),
    default=None,
    help="Input resolution: one side or HxW, e.g. 384x640 (multiples of 32; default 224 or "
    "the checkpoint's).",
)
@click.option("--head", type=click.Choice(["classifier", "features"]), default="classifier",
              show_default=True, help="classifier: logits; features: the four stage maps "
              "stage1..stage4 (a detection/segmentation backbone, docs/backbone.md).")  # fmt: skip
@click.option(
    "--weights",
    type=click.Path(),
    default=None,
    help="Official .pth/.safetensors or an own-format checkpoint.",
)
@click.option(
    "--precision",
    type=LazyChoice(float_precisions),
    default=None,
    help="Float precision (default: the target's own; `restv2-edge targets` lists them). "
    "Half precision pays only on hardware with native half math: openvino fp16 runs at the "
    "device's native half type (bf16 on CPUs with AVX-512 BF16 or AMX, else f32), bf16 pins "
    "bf16 (refused on CPUs without it); onnx and litert fp16 are slower than or as fast as "
    "fp32 on CPUs (half the file; for GPUs). Per target: docs/precision.md.",
)
@click.option("--raw-input", is_flag=True, help="Input is raw RGB 0-255; normalization inside.")
@click.option("--batch", type=POSITIVE_INT, default=1, show_default=True,
              help="Batch the artifact is exported with (input.shape[0]).")  # fmt: skip
@click.option("--dynamic-batch", is_flag=True,
              help="Symbolic batch dimension (any count at run time; --batch is the nominal "
              "one), for targets that offer it (the others refuse it).")  # fmt: skip
@click.option(
    "--deployment-target",
    default=None,
    help="Minimum OS the artifact must load on, for targets that read it (Core ML: iOS17 "
    "unless given).",
)
@click.option(
    "--compute-units",
    default=None,
    help="Compute units the artifact asks for, for targets that read them (Core ML: ALL, "
    "CPU_ONLY, CPU_AND_GPU, CPU_AND_NE; default CPU_ONLY for fp32, ALL otherwise).",
)
@click.option("--output", type=OutputPath(), default=None, help="Artifact folder.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@click.option("--no-verify", is_flag=True, help="Keep the artifact even if parity fails.")
@click.option("--parity-data", type=click.Path(exists=True), default=None,
              help="Photo folder or tar for the parity gate (default: the shared ImageNet "
              "sample; seeded synthetic images, with a warning, where it is missing).")  # fmt: skip
@click.option("--parity-limit", type=POSITIVE_INT, default=16, show_default=True)
@click.option("--int8", is_flag=True, help="INT8 post-training quantization (needs calibration).")
@click.option("--calib", type=click.Path(), default=None,
              help="--int8: a calibration set from restv2-edge calibrate.")  # fmt: skip
@click.option("--calib-data", type=click.Path(), default=None,
              help="--int8: build the calibration set from this image folder or tar.")  # fmt: skip
@click.option("--calib-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]),
              default=None, help="--int8: how activation ranges are chosen, for recipes "
              "that offer a choice (default: percentile).")  # fmt: skip
@click.option("--weights-only", is_flag=True,
              help="--int8: int8 weights, float activations (no calibration), for recipes "
              "that offer it (`restv2-edge targets`).")  # fmt: skip
@click.option("--max-drop", type=FiniteFloat(0, 100), default=None,
              help="--int8: keep layers float until the top-1 drop is <= P points.")  # fmt: skip
@click.option("--accuracy-data", type=click.Path(), default=None,
              help="--max-drop: held-back labelled data (default: CIFAR-10 test).")  # fmt: skip
def export(**o: Any) -> None:
    """Export to a deployment format, verify it in its runtime, write manifest.json."""
    from restv2_edge.converters.base import (
        ExportRequest,
        get_converter,
        get_descriptor,
        target_names,
    )
    from restv2_edge.export import export_artifact

    out = console()
    if o["int8"] and o["precision"]:
        raise click.UsageError("--int8 and --precision exclude each other")
    if not o["int8"]:
        refuse_unused(INT8_OPTIONS, "without --int8")
    if o["max_drop"] is None:
        refuse_unused(["accuracy_data"], "without --max-drop")
    if o["head"] == "features" and o["max_drop"] is not None:
        raise click.UsageError("--max-drop measures top-1 accuracy: a classifier only")
    if o["max_drop"] is not None and isinstance(o["image_size"], tuple):
        raise click.UsageError("--max-drop takes a square --image-size (center-crop photos)")
    if o["output"]:
        from restv2_edge.publish import check_output

        check_output(o["output"], o["force"])
    if o["int8"]:
        from restv2_edge.calibration.recipes import int8_targets

        if o["target"] not in int8_targets():
            raise click.UsageError(
                f"--int8 is not offered for {o['target']} (INT8 recipes: "
                f"{', '.join(int8_targets())})"
            )
    if o["dynamic_batch"] and not get_descriptor(o["target"]).dynamic_batch:
        offering = [t for t in target_names() if get_descriptor(t).dynamic_batch]
        raise click.UsageError(
            f"--dynamic-batch is not offered for {o['target']} (dynamic batch: "
            f"{', '.join(offering) or 'no target'}); use --batch N for a static batch"
        )
    readers = option_readers(o["target"])
    for name in TARGET_OPTIONS:
        if given(name) and name not in readers:
            offering = [t for t in target_names() if name in option_readers(t)]
            raise click.UsageError(
                f"--{name.replace('_', '-')} does nothing for {o['target']} "
                f"(read by {', '.join(offering) or 'no target'})"
            )
    converter = get_converter(o["target"])
    converter.check_installed()
    precision = "int8" if o["int8"] else o["precision"] or converter.default_precision
    options = {name: o[name] for name in get_descriptor(o["target"]).options if given(name)}
    request = ExportRequest(
        precision=precision,
        raw_input=o["raw_input"],
        batch_size=o["batch"],
        dynamic_batch=o["dynamic_batch"],
        options=options,
    )
    converter.check_request(request)
    if o["int8"]:
        from restv2_edge.calibration.dataset import quantization_settings

        request.quantization = quantization_settings(o)
    with StepProgress(out) as progress:
        progress("build")
        model = build_model(o["variant"], o["image_size"], o["weights"], out, o["head"])
        if o["int8"]:
            from restv2_edge.calibration.dataset import request_calibration

            progress("calibration set")
            from restv2_edge.export import normalization

            pre, hw = normalization(model), model.input_hw
            request.calibration = request_calibration(o, pre, out.print, hw)
        name = model_label(model)
        output = Path(o["output"] or f"exports/{name}-{o['target']}-{precision}")
        path, manifest = export_artifact(
            model,
            o["target"],
            output,
            request,
            force=o["force"],
            verify=not o["no_verify"],
            parity_data=o["parity_data"],
            parity_limit=o["parity_limit"],
            progress=progress,
        )
    print_parity(manifest.parity, out)
    guard = (manifest.quantization or {}).get("max_drop")
    if guard:
        kept = len(manifest.quantization.get("layers_kept_float", []))
        verdict = "within" if guard["within_limit"] else "[yellow]NOT within[/]"
        out.print(f"max-drop: top-1 {guard['int8_top1']:.2f} % vs fp32 {guard['fp32_top1']:.2f} % "
                  f"({guard['drop_points']:+.2f} pt, {verdict} {guard['limit_points']:g} pt), "
                  f"{kept} layers kept float")  # fmt: skip
    out.print(f"wrote {path}")


def model_label(model: Any) -> str:
    from restv2_edge.config import format_image_size, variant_name

    head = "-features" if model.head_type == "features" else ""
    size = format_image_size(model.image_size)
    return f"restv2-{variant_name(model.config) or 'custom'}-{size}{head}"


@main.command()
@click.argument("artifact", type=click.Path())
@click.option(
    "--weights", required=True, type=click.Path(), help="Checkpoint the artifact was exported from."
)
@click.option(
    "--data",
    type=click.Path(),
    default=None,
    help="Photo folder (default: the shared ImageNet sample).",
)
@click.option("--limit", type=POSITIVE_INT, default=64, show_default=True)
@click.option("--json", "json_file", type=ReportPath(), default=None)
@device_option
def parity(
    artifact: str,
    weights: str,
    data: str | None,
    limit: int,
    json_file: str | None,
    device: str | None,
) -> None:
    """Check an existing artifact against PyTorch; non-zero exit past the thresholds."""
    from restv2_edge.artifact import open_artifact
    from restv2_edge.errors import ParityError
    from restv2_edge.export import artifact_model
    from restv2_edge.factory import create_model
    from restv2_edge.parity import (
        gate_was_synthetic,
        manifest_inputs,
        measure,
        replace_parity_record,
    )

    out = console()
    manifest, runner = open_artifact(artifact, device=device)
    model = create_model(manifest.config, manifest.image_size, None, weights, head=manifest.head)
    reference = artifact_model(model, "native", manifest.raw_input)
    inputs = manifest_inputs(manifest, data, limit)
    record = measure(runner, reference, inputs, manifest.precision)
    if json_file:
        write_report(json_file, json.dumps(record, indent=2) + "\n")
    print_parity(record, out)
    if record["status"] != "passed":
        raise ParityError(f"{artifact}: parity failed")
    if not inputs.synthetic and gate_was_synthetic(manifest.parity):
        try:
            replace_parity_record(Path(artifact), manifest, record)
        except (RestV2EdgeError, OSError) as exc:
            out.print(f"[yellow]warning:[/] the manifest keeps its synthetic record ({exc})")
        else:
            out.print("manifest: the synthetic-image parity record is replaced by this one")


@main.command()
@click.argument("artifact", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--top", type=POSITIVE_INT, default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@device_option
def predict(
    artifact: str, images: tuple[str, ...], top: int, as_json: bool, device: str | None
) -> None:
    """Top-k class names with probabilities, using only the manifest and the runtime."""
    from restv2_edge.artifact import classify
    from restv2_edge.data import open_unlabelled

    opened = []
    for path in images:
        source = open_unlabelled(path)
        opened.append(source.open(source.items[0][0]))
    results = classify(artifact, opened, top, device)
    if as_json:
        click.echo(json.dumps({p: r for p, r in zip(images, results)}, indent=2))
        return
    for path, result in zip(images, results):
        click.echo(path)
        for entry in result:
            click.echo(f"  {entry['probability']:7.2%}  {entry['label']} ({entry['index']})")


@main.command(name="eval")
@click.argument("models", nargs=-1, required=True, type=click.Path(), metavar="MODEL...")
@click.option("--data", required=True, type=click.Path(), help="Labelled ImageFolder dir or tar.")
@click.option("--split", default=None, help="Split folder inside --data (e.g. test).")
@click.option("--limit", type=POSITIVE_INT, default=None,
              help="At most N images, spread over classes.")  # fmt: skip
@click.option("--json", "json_file", type=ReportPath(), default=None)
@click.option("--predictions", is_flag=True, help="Put the per-image top-5 in the --json report.")
@device_option
@ray_option("Run each shard of each artifact as a Ray task on the cluster at ADDRESS "
            "(auto: the one this machine joined; local: start one here; HOST:PORT).")  # fmt: skip
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run (shard results kept beside --json).")  # fmt: skip
@click.option("--shard-size", type=POSITIVE_INT, default=DEFAULT_SHARD_SIZE, show_default=True,
              help="Images per shard (rounded up to a multiple of the batch).")  # fmt: skip
@click.option("--retries", type=click.IntRange(min=0), default=DEFAULT_RETRIES, show_default=True,
              help="--ray: times a task whose worker died is run again.")  # fmt: skip
@click.option("--shared-storage", is_flag=True,
              help="--ray: every node sees the artifact paths: send paths, not files.")  # fmt: skip
def evaluate_command(models: tuple[str, ...], data: str, split: str | None, limit: int | None,
                     json_file: str | None, predictions: bool, device: str | None,
                     ray_address: str | None, resume: bool, shard_size: int, retries: int,
                     shared_storage: bool) -> None:  # fmt: skip
    """Top-1/top-5, per-class accuracy and worst classes of checkpoints or exported artifacts
    on labelled images; --ray spreads the shards over a Ray cluster."""
    if resume and not json_file:
        raise click.UsageError("--resume needs --json REPORT (shard results are kept beside it)")
    if ray_address is None:
        refuse_unused(["retries", "shared_storage"], "without --ray")
    elif not all(Path(model).is_dir() for model in models):
        raise click.UsageError("--ray evaluates exported artifact folders, not checkpoints")
    from restv2_edge.scale.command import eval_command

    eval_command(models, data, split, limit, json_file, predictions, device, ray_address,
                 resume, shard_size, retries, shared_storage, console())  # fmt: skip


def run() -> None:
    """Console-script entry: one line on error, non-zero exit, never a traceback.

    This is the one error boundary: project errors print as they are; anything else becomes
    one line naming the command, the step and the exception (the traceback only with
    ``--debug`` or RESTV2_EDGE_DEBUG=1).
    """
    DEBUG.set(False)
    STEP.set("")
    try:
        main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(2)
    except RestV2EdgeError as exc:
        if debugging():
            raise
        click.echo(f"error: {one_line(str(exc))}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        if debugging():
            raise
        click.echo(f"error: {unexpected_error_line(exc)}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    run()
