"""The command line: thin wrappers over the library, human tables or ``--json``.

Every ``ShotlineError`` becomes one ``error: ...`` line on stderr and the error's exit
code (2 for bad input, 3 for budget, 4 for provider, 5 for media); nothing else is
written when input is bad.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from . import api
from .capabilities import Capabilities, OverrideExpiredWarning, load_table
from .errors import BriefError, ShotlineError
from .planner import Plan, plan as make_plan
from .pricing import Estimate, estimate as make_estimate, usd
from .settings import Settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Turn a written brief into a finished multi-shot video, without runaway cost.",
)
out = Console()
err = Console(stderr=True)

BriefArg = Annotated[
    str | None, typer.Argument(help="Brief file, or - for stdin.", show_default=False)
]
TextOpt = Annotated[str | None, typer.Option("--text", help="The brief itself, inline.")]
SecondsOpt = Annotated[float | None, typer.Option(help="Target length of the output.")]
ModelOpt = Annotated[str | None, typer.Option(help="PROVIDER/MODEL (default local/preview).")]
SizeOpt = Annotated[str | None, typer.Option(help="Output size WxH, e.g. 1280x720.")]
FpsOpt = Annotated[int | None, typer.Option(help="Output frame rate.")]
AudioOpt = Annotated[bool | None, typer.Option("--audio/--no-audio", help="Audio track.")]
SeedOpt = Annotated[int | None, typer.Option(help="Seed passed to models that take one.")]
TransitionOpt = Annotated[
    str, typer.Option(help="none, or crossfade:SECONDS at every join.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
OverridesOpt = Annotated[
    Path | None, typer.Option(help="Capability overrides file (default HOME/overrides.toml).")
]


def _show_warning(
    message: Warning | str, category: type[Warning], *_: Any, **__: Any
) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def _settings(overrides: Path | None) -> Settings:
    return Settings(overrides=overrides) if overrides else Settings()


def read_source(brief: str | None, text: str | None) -> str | Path:
    if text is not None and brief is not None:
        raise BriefError("give either a BRIEF file or --text, not both")
    if text is not None:
        return text
    if brief is None:
        raise BriefError("no brief: pass a file, - for stdin, or --text '...'")
    if brief == "-":
        return sys.stdin.read()
    return Path(brief)


def plan_json(plan: Plan, estimate: Estimate | None = None) -> dict[str, Any]:
    shots = []
    for shot in plan.shots:
        row: dict[str, Any] = {
            "index": shot.index,
            "prompt": shot.prompt,
            "seconds": shot.seconds,
            "source": list(shot.source),
            "billed_seconds": shot.billed_seconds,
            "use_seconds": shot.use_seconds,
            "trim_seconds": shot.trim_seconds,
            "fixed": shot.fixed,
        }
        if estimate:
            row["cost_usd"] = usd(estimate.shots[shot.index].cost_usd)
        shots.append(row)
    data: dict[str, Any] = {
        "model": plan.model,
        "seconds": plan.seconds,
        "billed_seconds": plan.billed_seconds,
        "size": plan.size,
        "fps": plan.fps,
        "audio": plan.audio,
        "crossfade": plan.crossfade,
        "style": plan.style,
        "shots": shots,
    }
    if estimate:
        data["cost_usd"] = usd(estimate.cost_usd)
        data["price_source"] = estimate.price_source
    return data


def plan_table(plan: Plan, estimate: Estimate | None = None) -> Table:
    title = f"{plan.model} · {plan.seconds:g} s target · {plan.billed_seconds} s billed"
    if estimate:
        title += f" · ${estimate.cost_usd:.2f} ({estimate.price_source} prices)"
    table = Table(title=title, title_justify="left")
    for col in ("#", "call", "keep", "prompt", *(["cost"] if estimate else [])):
        table.add_column(col, overflow="fold")
    for shot in plan.shots:
        cost = [f"${estimate.shots[shot.index].cost_usd:.2f}"] if estimate else []
        table.add_row(
            str(shot.index + 1), f"{shot.seconds}s", f"{shot.use_seconds:.2f}s",
            shot.prompt, *cost,
        )
    return table


def _plan_and_estimate(
    brief: str | None, text: str | None, overrides: Path | None, **opts: Any
) -> tuple[Plan, Estimate]:
    req = api.resolve(read_source(brief, text), settings=_settings(overrides), **opts)
    plan = make_plan(req.brief, req.caps, req.options)
    return plan, make_estimate(plan, req.caps)


@app.command("plan")
def plan_cmd(
    brief: BriefArg = None,
    text: TextOpt = None,
    seconds: SecondsOpt = None,
    model: ModelOpt = None,
    size: SizeOpt = None,
    fps: FpsOpt = None,
    transition: TransitionOpt = "none",
    json_out: JsonOpt = False,
    overrides: OverridesOpt = None,
) -> None:
    """Split a brief into shots for a model: durations, trims and source spans."""
    plan, _ = _plan_and_estimate(
        brief, text, overrides, model=model, seconds=seconds, size=size, fps=fps,
        transition=transition,
    )
    if json_out:
        out.print_json(json.dumps(plan_json(plan)))
    else:
        out.print(plan_table(plan))


@app.command("estimate")
def estimate_cmd(
    brief: BriefArg = None,
    text: TextOpt = None,
    seconds: SecondsOpt = None,
    model: ModelOpt = None,
    audio: AudioOpt = None,
    size: SizeOpt = None,
    fps: FpsOpt = None,
    transition: TransitionOpt = "none",
    json_out: JsonOpt = False,
    overrides: OverridesOpt = None,
) -> None:
    """What a brief would cost to render, shot by shot, before any call is made."""
    plan, est = _plan_and_estimate(
        brief, text, overrides, model=model, seconds=seconds, size=size, fps=fps,
        audio=audio, transition=transition,
    )
    if json_out:
        out.print_json(json.dumps(plan_json(plan, est)))
    else:
        out.print(plan_table(plan, est))


def caps_json(caps: Capabilities) -> dict[str, Any]:
    data = caps.model_dump(mode="json", exclude={"override"})
    data["prices"] = {k: float(v) for k, v in caps.prices.items()}
    data["audio_multiplier"] = float(caps.audio_multiplier)
    data["overridden"] = caps.override is not None
    if caps.override:
        data["override"] = caps.override.model_dump(mode="json")
    return data


@app.command("providers")
def providers_cmd(json_out: JsonOpt = False, overrides: OverridesOpt = None) -> None:
    """List every known model: durations, sizes, audio, prices and status."""
    settings = _settings(overrides)
    table_data = load_table(settings.overrides_path)
    models = [table_data.get(name) for name in table_data.names()]
    if json_out:
        out.print_json(json.dumps([caps_json(c) for c in models]))
        return
    table = Table(title="models (✎ = overridden by the user)", title_justify="left")
    for col in ("model", "durations", "audio", "$/s", "status"):
        table.add_column(col, overflow="fold")
    for c in models:
        ds = c.durations
        durations = f"{ds[0]}–{ds[-1]}" if len(ds) > 3 and ds[-1] - ds[0] == len(ds) - 1 else (
            ",".join(map(str, ds))
        )
        prices = " ".join(f"{k}:{v}" for k, v in c.prices.items())
        status = c.status if c.status == "active" else f"sunset {c.sunset_date}"
        name = f"{c.model} ✎" if c.override else c.model
        table.add_row(name, durations, f"{c.audio} ×{c.audio_multiplier}", prices, status)
    out.print(table)


def main() -> None:
    """Console-script entry point: run the app, turning our errors into messages."""
    warnings.showwarning = _show_warning
    warnings.simplefilter("always", OverrideExpiredWarning)
    try:
        app(standalone_mode=False)
    except ShotlineError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        from click.exceptions import ClickException

        if isinstance(exc, ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
