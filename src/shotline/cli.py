"""The command line: thin wrappers over the library, human tables or ``--json``.

Every ``ShotlineError`` becomes one ``error: ...`` line on stderr and the error's exit
code (2 for bad input, 3 for budget, 4 for provider, 5 for media); nothing else is
written when input is bad.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import warnings
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from . import api
from .core import inputs
from .core.capabilities import (
    Capabilities,
    OverrideExpiredWarning,
    load_table,
    parse_size,
    table_for,
    tier_of,
)
from .core.cast import full_stop
from .core.planner import Plan, PlanImage, PlannedShot
from .core.planner import plan as make_plan
from .core.pricing import Estimate, money
from .core.pricing import estimate as make_estimate
from .core.takes import every_key, extras, slot_owner
from .display import RenderDisplay
from .errors import BriefError, Interrupted, InvalidRequest, ShotlineError
from .providers import plugins
from .settings import Settings
from .store import ledger, lifecycle
from .store.cache import Store
from .store.db import Database

if TYPE_CHECKING:
    from .engine.renderer import RenderResult

app = typer.Typer(
    no_args_is_help=True,
    help="Turn a written brief into a finished multi-shot video, without runaway cost.",
    context_settings={"show_default": True},
)
out = Console()
err = Console(stderr=True)


class Plain(Table):
    """A table whose cells show exactly what they hold: a prompt, a name or a vendor's job id
    is text, never Rich markup (``[bold]x`` prints as written, ``[/red]`` cannot crash)."""

    def add_row(self, *cells: RenderableType | None, **kwargs: Any) -> None:
        super().add_row(*(Text(c) if isinstance(c, str) else c for c in cells), **kwargs)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        out.print(f"shotline {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Turn a written brief into a finished multi-shot video, without runaway cost."""


BriefArg = Annotated[
    str | None, typer.Argument(help="Brief file, or - for stdin.", show_default=False)
]
TextOpt = Annotated[str | None, typer.Option("--text", help="The brief itself, inline.",
                                             show_default=False)]
SecondsOpt = Annotated[float | None, typer.Option(
    help="Target length of the output.",
    show_default="the brief's durations, else the time its words take to read")]
ModelOpt = Annotated[str | None, typer.Option(
    help="PROVIDER/MODEL.", show_default="the brief's, else $SHOTLINE_MODEL, else local/preview")]
SizeOpt = Annotated[str | None, typer.Option(help="Output size WxH, e.g. 1280x720.",
                                             show_default="the brief's, else the model's first")]
FpsOpt = Annotated[int | None, typer.Option(help="Output frame rate.",
                                            show_default="the brief's, else the model's")]
AudioOpt = Annotated[bool | None, typer.Option("--audio/--no-audio", help="Audio track.",
                                               show_default="the brief's, else off")]
SeedOpt = Annotated[int | None, typer.Option(help="Seed passed to models that take one.",
                                             show_default="none")]
TransitionOpt = Annotated[
    str, typer.Option(help="none, or crossfade:SECONDS at every join.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
YesOpt = Annotated[bool, typer.Option(
    "--yes", "-y", help="Accept a duration hint that more than doubles the billed seconds.")]
OverridesOpt = Annotated[
    Path | None, typer.Option(help="Capability overrides file.",
                              show_default="$SHOTLINE_HOME/overrides.toml")
]
ChainOpt = Annotated[bool, typer.Option(
    "--chain/--no-chain",
    help="Start a continuation (a shot marked as continuing, or split from a long one) from "
         "the last frame of the shot before, where the model takes a first frame; such a "
         "chain renders in order. --no-chain renders every shot from its prompt, concurrently.")]
LoudnessOpt = Annotated[bool | None, typer.Option(
    "--loudness/--no-loudness",
    help="Bring every shot to one loudness (SHOTLINE_LOUDNESS_TARGET, default -16 LUFS); "
         "--no-loudness keeps each clip's own level. Default: SHOTLINE_LOUDNESS.")]


def _show_warning(
    message: Warning | str, category: type[Warning], *_: Any, **__: Any
) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False, soft_wrap=True)


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
        # Bytes, decoded here: a brief that is not UTF-8 is refused by name, and no more is
        # read than a brief can be.
        data = sys.stdin.buffer.read(inputs.max_brief_bytes() + 1)
        return inputs.decode_brief(data, "the brief on stdin")
    if (why := inputs.text_problem(brief)) is not None:
        raise BriefError(f"the brief's file name is not text: {why}")
    return Path(brief)


def _check(**options: Any) -> None:
    """Options as typed on the command line, checked by the rules every face shares
    (core/inputs.py); a bad one is named as written (``--fps 0``), before anything is read."""
    inputs.check_options("cli", **options)


def plan_json(plan: Plan, estimate: Estimate | None = None) -> dict[str, Any]:
    """The plan (and its price) as JSON: shots numbered from 1, money as decimal strings."""
    shots = []
    for shot in plan.shots:
        row: dict[str, Any] = {
            "index": shot.number,
            "prompt": shot.prompt,
            "seconds": shot.seconds,
            "source": list(shot.source),
            "billed_seconds": shot.billed_seconds,
            "use_seconds": shot.use_seconds,
            "trim_seconds": shot.trim_seconds,
            "fixed": shot.fixed,
            "hint": shot.hint,
            "cast": list(shot.cast),
            "references": [{"name": r.name, "sha256": r.sha256,
                            "source": plan.image(r.sha256).source} for r in shot.references],
            "first_frame": _frame_json(shot.first_frame),
            "last_frame": _frame_json(shot.last_frame),
            "references_note": shot.references_note,
            "continues": shot.continues,
            "chain_note": shot.chain_note,
        }
        if estimate:
            cost = estimate.shots[shot.index]
            row.update(cost_usd=money(cost.cost_usd), full_usd=money(cost.full_usd),
                       stored=cost.stored, takes=cost.takes)
        shots.append(row)
    data: dict[str, Any] = {
        "model": plan.model,
        "seconds": plan.seconds,
        "billed_seconds": plan.billed_seconds,
        "size": plan.size,
        "fps": plan.fps,
        "audio": plan.audio,
        "crossfade": plan.crossfade,
        "title": plan.title,
        "style": plan.style,
        "cast": [c.model_dump(mode="json") for c in plan.cast],
        "shots": shots,
        # Shot numbers of each chain, and how many renders the longest takes in a row.
        "chains": [[i + 1 for i in run] for run in plan.chains()],
        "renders_in_a_row": max((len(run) for run in plan.chains()), default=1),
    }
    if estimate:
        data.update(cost_usd=money(estimate.cost_usd), full_usd=money(estimate.full_usd),
                    worst_usd=money(estimate.worst_usd), stored=estimate.stored,
                    price_source=estimate.price_source)
    return data


def _frame_json(image: PlanImage | None) -> dict[str, str] | None:
    return None if image is None else {"source": image.source, "sha256": image.sha256}


def _prompt_shown(plan: Plan, shot: PlannedShot) -> str:
    """The shot's own words: its prompt without the style and cast descriptions added to it
    (the columns beside it show those)."""
    body = shot.prompt.removesuffix(f" Style: {plan.style}") if plan.style else shot.prompt
    descriptions = {c.name: c.description for c in plan.cast}
    for name in reversed(shot.cast):
        for tail in (f" {name}: {full_stop(descriptions[name])}", f" {name}: {descriptions[name]}"):
            if body.endswith(tail):
                body = body[: -len(tail)]
                break
    return body


def _images_cell(plan: Plan, shot: PlannedShot) -> str:
    """Who the shot shows, what it sends, and why not, in a few words per line."""
    lines = []
    if shot.cast:
        refs = len(shot.references)
        lines.append(", ".join(shot.cast) + (f" · {refs} ref{'s' * (refs != 1)}" if refs else ""))
    for word, image in (("first", shot.first_frame), ("last", shot.last_frame)):
        if image is not None:
            lines.append(f"{word}: {image.source}")
    if shot.references_note:
        lines.append(shot.references_note)
    if shot.continues:
        lines.append(f"starts from shot {shot.index}'s last frame")
    elif shot.chain_note:
        lines.append(shot.chain_note)
    return "\n".join(lines)


def chain_line(chains: list[tuple[int, ...]]) -> str:
    """What the plan's chains cost in time: each renders its shots one after another."""
    runs = ", ".join("→".join(str(i + 1) for i in run) for run in chains)
    longest = max(len(run) for run in chains)
    return (f"chains: {runs}. Each shot of a chain starts from the last frame of the one "
            f"before, so a chain renders in order: about {longest} render times in a row "
            "instead of 1 (--no-chain renders every shot concurrently)")


def plan_table(plan: Plan, estimate: Estimate | None = None) -> Table:
    title = f"{plan.model} · {plan.seconds:g} s target · {plan.billed_seconds} s billed"
    if estimate:
        title += f" · ${estimate.cost_usd:.2f} to pay now"
        if estimate.stored:
            title += f" ({estimate.stored} stored; ${estimate.full_usd:.2f} without the store)"
        title += f" · {estimate.price_source} prices"
    if plan.style:
        title += f"\nstyle: {plan.style}"
    if chains := plan.chains():
        title += "\n" + chain_line(chains)
    table = Plain(title=Text(title), title_justify="left")
    images = bool(plan.cast) or any(s.first_frame or s.last_frame or s.continues or s.chain_note
                                    for s in plan.shots)
    columns = ["#", "call", "keep", "hint", "prompt", *(["cast & images"] if images else []),
               *(["cost", "full"] if estimate else [])]
    for col in columns:
        table.add_column(col, overflow="fold")
    for shot in plan.shots:
        cost = []
        if estimate:
            c = estimate.shots[shot.index]
            cost = ["stored" if c.stored else f"${c.cost_usd:.2f}", f"${c.full_usd:.2f}"]
            if c.takes > 1:
                cost[0] += f" ({c.takes} takes)"
        table.add_row(
            str(shot.number), f"{shot.seconds}s", f"{shot.use_seconds:.2f}s", shot.hint or "",
            _prompt_shown(plan, shot), *([_images_cell(plan, shot)] if images else []), *cost,
        )
    return table


def _plan_and_estimate(
    brief: str | None, text: str | None, overrides: Path | None, **opts: Any
) -> tuple[Plan, Estimate]:
    """The plan, and what rendering it would pay now (the store is read, never created)."""
    settings = _settings(overrides)
    req = api.resolve(read_source(brief, text), settings=settings, spelling="cli", **opts)
    plan = make_plan(req.brief, req.caps, req.options)
    keys = every_key(plan, req.caps)
    return plan, make_estimate(plan, req.caps, api.stored_keys(settings, keys),
                               settings.max_attempts)


@app.command("plan")
def plan_cmd(
    brief: BriefArg = None,
    text: TextOpt = None,
    seconds: SecondsOpt = None,
    model: ModelOpt = None,
    size: SizeOpt = None,
    fps: FpsOpt = None,
    transition: TransitionOpt = "none",
    yes: YesOpt = False,
    chain: ChainOpt = True,
    json_out: JsonOpt = False,
    overrides: OverridesOpt = None,
) -> None:
    """Split a brief into shots for a model: durations, hints read, trims and source spans."""
    settings = _settings(overrides)
    req = api.resolve(read_source(brief, text), settings=settings, model=model, seconds=seconds,
                      size=size, fps=fps, transition=transition, yes=yes, spelling="cli",
                      chain=chain)
    plan = make_plan(req.brief, req.caps, req.options)
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
    takes: TakesOpt = 1,
    yes: YesOpt = False,
    chain: ChainOpt = True,
    json_out: JsonOpt = False,
    overrides: OverridesOpt = None,
) -> None:
    """What rendering a brief would pay now, shot by shot: stored shots are free."""
    plan, est = _plan_and_estimate(
        brief, text, overrides, model=model, seconds=seconds, size=size, fps=fps,
        audio=audio, transition=transition, yes=yes, takes=takes, chain=chain,
    )
    if json_out:
        out.print_json(json.dumps(plan_json(plan, est)))
    else:
        out.print(plan_table(plan, est))
        if est.worst_usd > est.cost_usd:
            out.print(f"worst case ${est.worst_usd:.2f}: this model bills failed attempts, and a "
                      f"shot may be tried up to {est.worst_usd / est.cost_usd:.0f} times; "
                      "--max-usd and the budgets stop it before any attempt they cannot cover",
                      markup=False)


def caps_json(caps: Capabilities) -> dict[str, Any]:
    data = caps.model_dump(mode="json", exclude={"override"})
    data["prices"] = {k: money(v) for k, v in caps.prices.items()}
    data["audio_multiplier"] = money(caps.audio_multiplier)
    data["overridden"] = caps.override is not None
    if caps.override:
        data["override"] = caps.override.model_dump(mode="json")
    return data


def _durations(ds: tuple[int, ...]) -> str:
    if len(ds) > 3 and ds[-1] - ds[0] == len(ds) - 1:
        return f"{ds[0]}–{ds[-1]} s"
    return ", ".join(map(str, ds)) + " s"


def _sizes(sizes: tuple[str, ...]) -> str:
    tiers = sorted({tier_of(s) for s in sizes}, key=lambda t: (len(t), t))
    return " ".join(tiers) + (f" ({len(sizes)} sizes)" if len(sizes) > 1 else f" ({sizes[0]})")


def model_lines(c: Capabilities) -> list[str]:
    """One model in three short lines (four if it takes images) that fit 80 columns, its id
    never cut."""
    status = "active" if c.status == "active" else f"sunset {c.sunset_date}" + (
        f", use {c.replacement}" if c.replacement else "")
    audio = c.audio + (f" ×{money(c.audio_multiplier)}" if c.audio == "optional" else "")
    prices = " ".join(f"{k} {money(v)}" for k, v in c.prices.items())
    lines = [
        f"  {c.model}{' ✎' if c.override else ''}  [{status}]",
        f"      {_durations(c.durations)} · cap {c.max_seconds} s · {_sizes(c.sizes)} · "
        f"{'/'.join(map(str, c.fps))} fps",
        f"      audio {audio} · $/s {prices}",
    ]
    if c.image_inputs:
        lines.append(f"      images: {image_inputs(c)}")
    return lines


def image_inputs(c: Capabilities) -> str:
    """What images one call of ``c`` takes, in words (``first frame, 3 references ...``)."""
    words = [k.replace("_", " ") for k in c.image_inputs if k != "reference"]
    if c.max_references:
        when = {"alone": ["without frames"], "with_first_frame": ["with a first frame"],
                "any": []}[c.reference_mode]
        if c.reference_durations:
            when.append(f"{'/'.join(map(str, c.reference_durations))} s calls")
        words.append(f"{c.max_references} ref{'s' * (c.max_references != 1)}"
                     + (f" ({', '.join(when)})" if when else ""))
    return ", ".join(words)


@app.command("providers")
def providers_cmd(json_out: JsonOpt = False, overrides: OverridesOpt = None) -> None:
    """Every known model: durations, per-call cap, sizes, fps, audio, prices, status, key,
    and whether a submit whose answer was lost can be looked up at the vendor."""
    settings = _settings(overrides)
    table_data = table_for(settings.overrides_path)
    models = [table_data.get(name) for name in table_data.names()]
    keys = {c.provider: plugins.credentials(c.provider) for c in models}
    lookups = {c.provider: plugins.lookup(c.provider) for c in models}

    def credentials(c: Capabilities) -> str:
        if c.provider != "openai":
            return keys[c.provider]
        # The openai adapter's key depends on the model: its gateway's, else OpenAI's own.
        gateway = table_data.gateways.get(c.gateway or "")
        variable = gateway.key_env if gateway else "OPENAI_API_KEY"
        if variable is None:
            return "not needed"
        return "present" if os.environ.get(variable) else f"missing: set {variable}"

    if json_out:
        out.print_json(json.dumps([
            {**caps_json(c), "credentials": credentials(c),
             "lookup": {"finds_jobs": lookups[c.provider][0], "how": lookups[c.provider][1]}}
            for c in models]))
        return
    lines = ["models by provider (✎ = overridden by you; `providers --json` lists every size)"]
    for provider in sorted(keys):
        can, how = lookups[provider]
        lines.append(f"{provider} · key {keys[provider]}")
        lines.append(f"  a lost submit is {'looked up' if can else 'not looked up'}: {how}")
        for c in (c for c in models if c.provider == provider):
            lines += model_lines(c)
            if c.provider == "openai" and credentials(c) != keys[provider]:
                lines.append(f"    key {credentials(c)}")  # a gateway's own key
    out.print("\n".join(lines), highlight=False, markup=False)


OutOpt = Annotated[Path | None, typer.Option(
    "-o", "--output", help="Where to write the MP4.",
    show_default="./BRIEF-NAME.mp4 in the current directory")]
FitOpt = Annotated[str | None, typer.Option(help="letterbox or crop, for clips of another shape.",
                                            show_default="$SHOTLINE_FIT, else letterbox")]
TakeOpt = Annotated[int, typer.Option(help="Take number: a new take renders a shot anew.")]
TakesOpt = Annotated[int, typer.Option(
    help="Candidates of every shot, rendered side by side and each billed; the first is in "
    "the output until you `pick` another.", show_default=True)]


def result_json(result: RenderResult) -> dict[str, Any]:
    return {
        "output": str(result.output),
        "seconds": round(result.seconds, 6),
        "cost_usd": money(result.cost_usd),
        "estimate_usd": money(result.estimate_usd),
        "model": result.plan.model,
        "render_id": result.render_id,
        "reopened": result.reopened,
        "key": result.key,
        "poster": str(result.poster),
        "contact_sheet": str(result.contact_sheet),
        "quality": [f.to_json() for f in result.flags],
        "shots": [
            {"index": p.number, "seconds": p.seconds, "use_seconds": p.use_seconds,
             "cost_usd": money(s.cost_usd), "cached": s.cached, "key": s.key,
             "job_id": s.job_id, "hint": p.hint}
            for s, p in zip(result.shots, result.plan.shots, strict=True)
        ],
        # The takes not picked (`pick` swaps one in): made, billed and stored beside them.
        "takes": [
            {"index": slot_owner(result.plan, s.index) + 1, "take": t.take,
             "cost_usd": money(s.cost_usd), "cached": s.cached, "key": s.key}
            for s, t in zip(result.takes, extras(result.plan), strict=False)
        ],
    }


def default_output(brief: str | None, title: str | None, prompt: str, preview: bool) -> Path:
    """``./<brief name>.mp4``: the file's name, else the title's or the first words'."""
    if brief is not None and brief != "-":
        name = Path(brief).stem
    else:
        words = re.findall(r"\w+", (title or prompt).lower())[:6]
        name = "-".join(words) or "brief"
    return Path.cwd() / f"{name[:80]}{'.preview' if preview else ''}.mp4"


def _print_result(result: RenderResult, json_out: bool, preview: bool) -> None:
    if json_out:
        out.print_json(json.dumps(result_json(result)))
        return
    cost = f"${result.cost_usd:.2f}"
    if preview:
        cost += f" (free preview; the real render would cost ${result.estimate_usd:.2f})"
    out.print(f"render:  {result.render_id}{' (reopened, no provider call)' if result.reopened else ''}\n"
              f"video:   {result.output}\nlength:  {result.seconds:.3f} s\n"
              f"cost:    {cost}\nposter:  {result.poster}\n"
              f"shots:   {result.contact_sheet}", highlight=False, markup=False, soft_wrap=True)
    _print_flags([f.to_json() for f in result.flags])


def _render(brief: str | None, text: str | None, output: Path | None, json_out: bool,
            preview: bool, fit: str | None, overrides: Path | None,
            max_usd: float | None = None, loudness: bool | None = None, **opts: Any) -> None:
    settings = _settings(overrides)
    if fit:
        settings = settings.model_copy(update={"fit": fit})
        if fit not in ("letterbox", "crop"):
            raise BriefError(f"--fit {inputs.shown(fit)}: use letterbox or crop")
    _check(max_usd=None if max_usd is None else str(max_usd), **opts)
    req = api.resolve(read_source(brief, text), settings=settings, spelling="cli", **opts)
    plan = make_plan(req.brief, req.caps, req.options)
    if output is None:
        output = default_output(brief, plan.title, req.brief.segments[0].prompt, preview)
    try:
        with RenderDisplay(plan, err) as display:
            result = api.render(req.brief, output=output, listener=display, preview=preview,
                                settings=settings, max_usd=max_usd, loudness=loudness, **opts)
    except Interrupted as exc:
        err.print(str(exc), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    _print_result(result, json_out, preview)


def _print_flags(flags: list[dict[str, Any]]) -> None:
    """One line per quality flag, as `render` and `show` print them."""
    for f in flags:
        where = "" if f.get("start") is None else f" at {f['start']:.2f}-{f['end']:.2f} s"
        shot = f"shot {f['shot']}: " if f.get("shot") else ""
        out.print(f"check:   {f['severity']} {f['kind']}{where}: {shot}{f['message']}",
                  highlight=False, markup=False, soft_wrap=True)


@app.command("render")
def render_cmd(
    brief: BriefArg = None,
    text: TextOpt = None,
    output: OutOpt = None,
    seconds: SecondsOpt = None,
    model: ModelOpt = None,
    size: SizeOpt = None,
    fps: FpsOpt = None,
    audio: AudioOpt = None,
    seed: SeedOpt = None,
    take: TakeOpt = 1,
    takes: TakesOpt = 1,
    transition: TransitionOpt = "none",
    fit: FitOpt = None,
    max_usd: Annotated[float | None, typer.Option(
        help="The most this render may bill, retries included.", show_default="no cap")] = None,
    yes: YesOpt = False,
    loudness: LoudnessOpt = None,
    chain: ChainOpt = True,
    json_out: JsonOpt = False,
    overrides: OverridesOpt = None,
) -> None:
    """Render a brief into one finished, verified MP4 (stored shots cost nothing)."""
    _render(brief, text, output, json_out, False, fit, overrides, max_usd, loudness, model=model,
            seconds=seconds, size=size, fps=fps, audio=audio, seed=seed, take=take,
            takes=takes, transition=transition, yes=yes, chain=chain)


@app.command("preview")
def preview_cmd(
    brief: BriefArg = None,
    text: TextOpt = None,
    model: ModelOpt = None,
    output: OutOpt = None,
    seconds: SecondsOpt = None,
    size: SizeOpt = None,
    fps: FpsOpt = None,
    audio: AudioOpt = None,
    seed: SeedOpt = None,
    transition: TransitionOpt = "none",
    fit: FitOpt = None,
    yes: YesOpt = False,
    loudness: LoudnessOpt = None,
    chain: ChainOpt = True,
    json_out: JsonOpt = False,
    overrides: OverridesOpt = None,
) -> None:
    """A free animatic with MODEL's cuts and sizes, and what the real render would cost."""
    _render(brief, text, output, json_out, True, fit, overrides, None, loudness, model=model,
            seconds=seconds, size=size, fps=fps, audio=audio, seed=seed, transition=transition,
            yes=yes, chain=chain)


@app.command("stitch")
def stitch_cmd(
    clips: Annotated[list[Path], typer.Argument(help="Clips to join, in order.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the MP4.")],
    size: Annotated[str, typer.Option(help="Output size WxH.")] = "1280x720",
    fps: Annotated[int, typer.Option(help="Output frame rate.")] = 24,
    seconds: SecondsOpt = None,
    fit: Annotated[str, typer.Option(help="letterbox or crop.")] = "letterbox",
    audio: Annotated[bool, typer.Option("--audio/--no-audio", help="Audio track.")] = True,
    transition: TransitionOpt = "none",
    loudness: LoudnessOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Join clips from any source: normalise (or copy clips that already match), trim to
    exactly --seconds, match loudness, verify."""
    from .core.planner import parse_transition
    from .engine import media  # imported here: every other command starts faster without PyAV
    from .engine.assembly import stitch_files
    from .engine.normalise import Format
    from .engine.renderer import loudness_target

    if fit not in ("letterbox", "crop"):
        raise BriefError(f"--fit {inputs.shown(fit)}: use letterbox or crop")
    _check(fps=fps, size=size, seconds=seconds, transition=transition)
    if missing := [c for c in clips if not c.is_file()]:
        raise BriefError(f"clip {missing[0]} is not a file: give the clips to join, in order")
    api.output_path(output)
    settings = _settings(None)
    width_height = parse_size(size)
    xf = round(parse_transition(transition) * fps)
    probes = [media.probe(clip, count_frames=False) for clip in clips]
    frames = media.fit_frames(probes, fps, seconds, xf, audio=audio)
    segments = [media.Segment(c, f) for c, f in zip(clips, frames, strict=True)]
    fmt = Format(size=width_height, fps=fps, audio=audio, fit="crop" if fit == "crop" else "letterbox",
                 preset=settings.encode_preset)
    joined = stitch_files(segments, output, fmt, crossfade=xf,
                          loudness=loudness_target(settings, loudness),
                          true_peak=settings.true_peak)
    result = joined.probe
    flags = [f.to_json() for f in joined.flags]
    data = {"output": str(output), "seconds": round(result.duration, 6), "frames": result.frames,
            "size": size, "fps": fps, "copied": joined.copied, "quality": flags,
            "clips": [{"path": str(c), "frames": f} for c, f in zip(clips, frames, strict=True)]}
    if json_out:
        out.print_json(json.dumps(data))
    else:
        how = "clips copied as they are" if joined.copied else "clips normalised"
        out.print(f"video:   {output}\nlength:  {result.duration:.3f} s ({result.frames} frames, "
                  f"{how})", highlight=False, markup=False)
        _print_flags(flags)


def _dump(data: Any) -> None:
    out.print_json(json.dumps(data, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return money(value)
    return str(value)


def _open(overrides: Path | None = None) -> tuple[Settings, Database, Store]:
    settings = _settings(overrides)
    db, store = api.open_store(settings)
    return settings, db, store


cache_app = typer.Typer(help="The content-addressed clip store (never pruned automatically).",
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("stats")
def cache_stats(json_out: JsonOpt = False) -> None:
    """How many clips and outputs are stored, their size and what they cost to make."""
    _, _, store = _open()
    stats = store.stats()
    if json_out:
        _dump(stats)
        return
    out.print(f"clips:   {stats['clips']} ({stats['bytes'] / 1e6:.1f} MB, "
              f"${stats['clips_value_usd']:.2f} to make again)\noutputs: {stats['outputs']}\n"
              f"store:   {stats['root']}", highlight=False, markup=False)


@cache_app.command("ls")
def cache_ls(json_out: JsonOpt = False) -> None:
    """Every stored clip, most recently used first."""
    _, _, store = _open()
    rows = store.ls()
    if json_out:
        _dump(rows)
        return
    table = Plain("key", "model", "seconds", "cost", "last used")
    for r in rows:
        table.add_row(r["key"][:23], r["model"], f"{r['seconds']:.2f}", f"${r['cost_usd']:.2f}",
                      _when(r["used_at"]))
    out.print(table)


@cache_app.command("prune")
def cache_prune(
    older_than: Annotated[float, typer.Option("--older-than", help="Days since last use.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would go.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Remove clips not used for --older-than DAYS (re-rendering them costs money again)."""
    if not 0 <= older_than < float("inf"):  # NaN fails this too
        raise BriefError(f"--older-than {older_than}: give a number of days, 0 or more")
    _, _, store = _open()
    gone = store.prune(older_than, dry_run)
    pieces = store.pieces().prune(older_than, dry_run)  # normalised segments: free to remake
    if json_out:
        _dump({"dry_run": dry_run, "removed": gone, "pieces_removed": pieces})
        return
    verb = "would remove" if dry_run else "removed"
    value = sum((Decimal(g["cost_usd"]) for g in gone), Decimal(0))
    out.print(f"{verb} {len(gone)} clip(s), {sum(g['bytes'] for g in gone) / 1e6:.1f} MB "
              f"(${value:.2f} to make again), and {pieces} normalised piece(s)", highlight=False,
              markup=False)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command("ledger")
def ledger_cmd(render: Annotated[str | None, typer.Option(help="Only this render.")] = None,
               json_out: JsonOpt = False) -> None:
    """Every billed provider attempt: provider, model, job id, seconds, price, amount."""
    _, db, _ = _open()
    rows = ledger.rows(db, render)
    if json_out:
        _dump(rows)
        return
    table = Plain("time", "render", "model", "job", "s", "audio", "$/s", "amount", "outcome")
    for r in rows:
        table.add_row(_when(r["created_at"]), r["render_id"] or "", r["model"],
                      r["provider_job_id"], str(r["seconds_billed"]), "yes" if r["audio"] else "",
                      f"{r['unit_price']:.4f}", f"${r['amount']:.2f}", r["outcome"])
    out.print(table)


@app.command("spend")
def spend_cmd(
    by: Annotated[str, typer.Option(help="day, provider or model.")] = "day",
    json_out: JsonOpt = False,
) -> None:
    """Money spent, and what cache hits saved, grouped by day, provider or model."""
    if by not in ("day", "provider", "model"):
        raise BriefError(f"--by {inputs.shown(by)}: use day, provider or model")
    _, db, _ = _open()
    rows = ledger.spend(db, by)
    if json_out:
        _dump(rows)
        return
    table = Plain(by, "calls", "billed s", "spent", "saved by cache")
    for r in rows:
        table.add_row(r[by], str(r["calls"]), str(r["seconds_billed"]), f"${r['spent_usd']:.2f}",
                      f"${r['saved_usd']:.2f}")
    out.print(table)


@app.command("renders")
def renders_cmd(json_out: JsonOpt = False) -> None:
    """Recent renders, newest first (ids whole: paste them into `show` or `reroll`)."""
    _, db, store = _open()
    rows = [{**r, "output": r["output"] and store.blobs.address(r["output"])}
            for r in lifecycle.list_renders(db)]
    if json_out:
        _dump(rows)
        return
    table = Plain("id", "status", "model", "seconds", "cost", "created")
    for r in rows:
        table.add_row(r["id"], r["status"], r["model"], f"{r['seconds'] or 0:.2f}",
                      f"${r['cost_usd']:.2f}", _when(r["created_at"])[:16])
    out.print(_whole(table, 0, 1))


@app.command("show")
def show_cmd(render_id: Annotated[str, typer.Argument(help="A render id (r_...).")],
             json_out: JsonOpt = False) -> None:
    """Reopen a render: its output and cost, with zero provider calls."""
    from .store.cache import still_name

    _, db, store = _open()
    row = lifecycle.get_render(db, render_id)
    if row is None:
        raise BriefError(f"no render {render_id!r}; `shotline renders` lists them")
    row.pop("brief", None)
    with db.read() as conn:
        seen = lifecycle.describe(conn, render_id)["shots"]
    # The rows past the shots are the takes not picked: listed under their shot instead.
    row["shots"] = row["shots"][:len(seen)] if seen else row["shots"]
    for shot, view in zip(row["shots"], seen, strict=False):
        shot.update(take=view["take"], takes=view["takes"])
    for shot in row["shots"]:  # numbered from 1, as everywhere else
        shot["index"] = shot.pop("idx") + 1
    name = row["output"]
    if name:  # where the file is: a path, or an s3:// URL
        row["output"] = store.blobs.address(name)
    if json_out:
        _dump(row)
        return
    lines = [f"render:  {row['id']} ({row['status']})", f"model:   {row['model']}",
             f"video:   {row['output'] or '-'}"]
    if name:
        lines += [f"poster:  {store.blobs.address(still_name(name, 'poster'))}",
                  f"shots:   {store.blobs.address(still_name(name, 'contact'))}"]
    lines += [f"length:  {row['seconds'] or 0:.3f} s",
              f"cost:    ${row['cost_usd']:.2f} (estimate ${row['estimate_usd']:.2f})"]
    if row["error"]:
        lines.append(f"error:   {row['error']}")
    for shot in row["shots"]:
        if shot.get("takes"):
            listed = ", ".join(f"{t['take']}{' (picked)' if t['picked'] else ''}"
                               for t in shot["takes"])
            lines.append(f"takes:   shot {shot['index']}: {listed}")
    # soft_wrap: a long path stays one line, so it can be copied whole.
    out.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)
    _print_flags(row.get("quality") or [])


# --- keys and tenants (tenants.py) ----------------------------------------------------
# `tenants` is imported in each command so that this section stays self-contained.

keys_app = typer.Typer(help="API keys of the HTTP service (stored hashed, shown once).",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")
tenants_app = typer.Typer(help="Tenants of the HTTP service and their budgets.",
                          no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
TenantOpt = Annotated[str | None, typer.Option("--tenant", help="A tenant id (t_...).")]


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="What the key is for (1-200 chars).")],
    tenant: Annotated[str | None, typer.Option(
        "--tenant", help="Add the key to this tenant (default: a new tenant named NAME).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Make an API key (and a tenant, unless --tenant): the key is printed this once."""
    from .service import tenants

    _, db, _ = _open()
    made = tenants.create_key(db, name, tenant)
    if json_out:
        _dump({"key": made.key, "key_id": made.key_id, "tenant": made.tenant,
               "webhook_secret": made.webhook_secret})
        return
    out.print(f"key:            {made.key}\n"
              "                (store it now: it is not kept and will not be shown again)\n"
              f"key id:         {made.key_id}\ntenant:         {made.tenant}\n"
              f"webhook secret: {made.webhook_secret}", highlight=False, markup=False, soft_wrap=True)


@keys_app.command("list")
def keys_list(tenant: TenantOpt = None, json_out: JsonOpt = False) -> None:
    """Every key with its visible prefix and use (never the key itself)."""
    from .service import tenants

    _, db, _ = _open()
    rows = tenants.list_keys(db, tenant)
    if json_out:
        _dump(rows)
        return
    table = Plain("id", "tenant", "name", "prefix", "state")
    for r in rows:
        table.add_row(r["id"], r["tenant"], r["name"], r["prefix"] + "…", _key_state(r))
    out.print(_whole(table, 0, 1, 3))


def _whole(table: Table, *columns: int) -> Table:
    # Ids are pasted into other commands: a narrow terminal may wrap names, never ids.
    for i in columns:
        column = table.columns[i]
        column.no_wrap = True
        column.min_width = max((len(str(c)) for c in column.cells), default=0)
    return table


def _key_state(row: dict[str, Any]) -> str:
    if row["revoked_at"]:
        return "revoked " + _when(row["revoked_at"])[:10]
    return "used " + _when(row["last_used_at"])[:16] if row["last_used_at"] else "never used"


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="A key id (key_...).")]) -> None:
    """Revoke a key for good: it stops authenticating at once."""
    from .errors import UserError
    from .service import tenants

    _, db, _ = _open()
    if not tenants.revoke_key(db, key_id):
        raise UserError(f"no key {key_id!r}; `shotline keys list` shows them")
    out.print(f"revoked {key_id}", highlight=False, markup=False)


def _budget(value: str) -> Decimal | None:
    from .errors import UserError

    if value.strip().lower() == "none":
        return None
    try:
        return Decimal(value)
    except ArithmeticError:
        raise UserError(f"{value!r} is not an amount in USD (or 'none')") from None


@tenants_app.command("budget")
def tenants_budget(
    tenant: Annotated[str, typer.Argument(help="A tenant id (t_...).")],
    daily: Annotated[str | None, typer.Option(
        "--daily", help="Daily cap in USD (UTC days), or 'none'; unchanged if not given.")] = None,
    monthly: Annotated[str | None, typer.Option(
        "--monthly", help="Monthly cap in USD, or 'none'; unchanged if not given.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Set a tenant's spending caps; renders that would pass them are refused."""
    from .errors import UserError
    from .service import tenants

    _, db, _ = _open()
    row = tenants.get_tenant(db, tenant)
    if row is None:
        raise UserError(f"no tenant {tenant!r}; `shotline tenants list` shows them")
    tenants.set_budget(
        db, tenant,
        daily=row["daily_budget_usd"] if daily is None else _budget(daily),
        monthly=row["monthly_budget_usd"] if monthly is None else _budget(monthly))
    row = tenants.get_tenant(db, tenant) or row
    if json_out:
        _dump(row)
        return
    out.print(f"tenant:  {tenant}\ndaily:   {_cap(row['daily_budget_usd'])}\n"
              f"monthly: {_cap(row['monthly_budget_usd'])}", highlight=False, markup=False)


def _cap(value: Decimal | None) -> str:
    return "no cap" if value is None else f"${value:.2f}"


@tenants_app.command("list")
def tenants_list(json_out: JsonOpt = False) -> None:
    """Every tenant, its budgets and how many keys it can use."""
    from .service import tenants

    _, db, _ = _open()
    rows = tenants.list_tenants(db)
    if json_out:
        _dump(rows)
        return
    table = Plain("id", "name", "daily", "monthly", "keys", "created")
    for r in rows:
        table.add_row(r["id"], r["name"], _cap(r["daily_budget_usd"]), _cap(r["monthly_budget_usd"]),
                      str(r["active_keys"]), _when(r["created_at"]))
    out.print(_whole(table, 0))


# --- webhook endpoints (service/webhooks.py) ----------------------------------------------------
# `webhooks` is imported in each command so that this section stays self-contained.

webhooks_app = typer.Typer(help="A tenant's webhook endpoints: every event is sent to each.",
                           no_args_is_help=True)
app.add_typer(webhooks_app, name="webhooks")
HookTenantOpt = Annotated[str, typer.Option("--tenant", help="A tenant id (t_...).")]


@webhooks_app.command("add")
def webhooks_add(
    url: Annotated[str, typer.Argument(help="A public http(s) URL (ports 80 and 443).")],
    tenant: HookTenantOpt,
    json_out: JsonOpt = False,
) -> None:
    """Send a tenant's events to URL; its signing secret is printed this once."""
    from .service import webhooks

    settings, db, _ = _open()
    endpoint_id, secret = webhooks.add_endpoint(db, tenant, url, settings)
    if json_out:
        _dump({"id": endpoint_id, "tenant": tenant, "url": url, "secret": secret})
        return
    out.print(f"endpoint: {endpoint_id}\nurl:      {url}\nsecret:   {secret}\n"
              "          (store it now: `webhooks list` never shows it again)",
              highlight=False, markup=False, soft_wrap=True)


@webhooks_app.command("list")
def webhooks_list(tenant: HookTenantOpt, json_out: JsonOpt = False) -> None:
    """A tenant's endpoints and whether each still receives events (never the secrets)."""
    from .service import webhooks

    _, db, _ = _open()
    rows = webhooks.list_endpoints(db, tenant)
    if json_out:
        _dump(rows)
        return
    table = Plain("id", "url", "state", "created")
    for r in rows:
        state = (f"disabled {_when(r['disabled_at'])[:16]}: {r['disabled_reason']}"
                 if r["disabled_at"] is not None else "enabled")
        table.add_row(r["id"], r["url"], state, _when(r["created_at"]))
    table.columns[0].no_wrap = True  # ids are pasted into `webhooks remove`
    out.print(table)


@webhooks_app.command("remove")
def webhooks_remove(
    endpoint_id: Annotated[str, typer.Argument(help="An endpoint id (we_...).")],
    tenant: HookTenantOpt,
) -> None:
    """Stop sending events to an endpoint; its deliveries still pending fail."""
    from .errors import UserError
    from .service import webhooks

    _, db, _ = _open()
    if not webhooks.remove_endpoint(db, tenant, endpoint_id):
        raise UserError(f"tenant {tenant!r} has no webhook endpoint {endpoint_id!r}; "
                        f"`shotline webhooks list --tenant {tenant}` shows them")
    out.print(f"removed {endpoint_id}", highlight=False, markup=False)

# --- the service: serve, worker, review actions --------------------------------------------


@app.command("serve")
def serve_cmd(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
) -> None:
    """Run the HTTP API (with a worker in the same process unless SHOTLINE_QUEUE=celery)."""
    from .service.checks import check
    from .service.server import serve

    settings = Settings()
    check(settings)
    serve(settings, host, port)


@app.command("worker")
def worker_cmd(
    concurrency: Annotated[int | None, typer.Option(
        min=1, help="Tasks run at once (SHOTLINE_QUEUE=celery), or renders (inline).",
        show_default="celery: the number of CPUs; inline: $SHOTLINE_WORKER_RENDERS")] = None,
) -> None:
    """Run a worker alone against the same database (as many as you like).

    With SHOTLINE_QUEUE=celery this is a Celery worker taking render tasks from the broker.
    """
    import logging

    from .service.checks import check

    settings = Settings()
    check(settings)  # before logging is set up: a bad setting is one line, nothing else
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if settings.queue == "celery":
        from .service.tasks import run_worker

        run_worker(settings, concurrency)
        return
    from .service.worker import run_forever

    if concurrency:
        settings = settings.model_copy(update={"worker_renders": concurrency})
    run_forever(settings)


RenderIdArg = Annotated[str, typer.Argument(help="A render id (r_...).", show_default=False)]


def _review(action: Callable[[Settings, Database, Store], Any], json_out: bool) -> None:
    settings, db, store = _open()
    try:
        view = action(settings, db, store)
    finally:
        db.close()
    if json_out:
        _dump(view)
    else:
        out.print(f"{view['id']}: {view['status']}"
                  + (f" ({view['review_note']})" if view.get("review_note") else ""),
                  highlight=False, markup=False)


@app.command("approve")
def approve_cmd(render_id: RenderIdArg, json_out: JsonOpt = False) -> None:
    """Publish a render that awaits review."""
    from .service import actions

    _review(lambda s, db, _: actions.approve(db, None, render_id, base_url=s.public_url,
                                             operator=True), json_out)


@app.command("reject")
def reject_cmd(render_id: RenderIdArg,
               reason: Annotated[str, typer.Option(help="Why, for the record.")],
               json_out: JsonOpt = False) -> None:
    """Reject a render that awaits review."""
    from .service import actions

    _review(lambda s, db, _: actions.reject(db, None, render_id, reason, base_url=s.public_url,
                                            operator=True), json_out)


@app.command("reroll")
def reroll_cmd(
    render_id: RenderIdArg,
    shot: Annotated[list[int], typer.Option("--shot", help="A shot number to make again "
                                            "(repeatable).", show_default=False)],
    prompt: Annotated[list[str] | None, typer.Option(
        help="N=TEXT: a new prompt for shot N (repeatable).", show_default=False)] = None,
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Where to write the new MP4 (renders made here only).",
        show_default="the store; `shotline show` prints where")] = None,
    takes: TakesOpt = 1,
    json_out: JsonOpt = False,
) -> None:
    """Render some shots of any render again as new takes (only they are billed).

    A render made by the service is restitched by its workers; one made here (`render`,
    `preview`, the library) is rendered again right here, with the other shots from the
    store.
    """
    from .service import actions

    prompts: dict[int, str] = {}
    for item in prompt or []:
        number, sep, text = item.partition("=")
        if not sep or not number.strip().isdigit():
            raise BriefError(f"--prompt takes N=TEXT (a shot number, '=', the prompt), got {item!r}")
        prompts[int(number)] = text
    try:
        request = actions.RerollRequest(shots=shot, prompts=prompts, takes=takes)
    except ValidationError as exc:
        raise InvalidRequest(inputs.explain(exc.errors(), "cli")) from None
    _review_action(render_id, output, json_out, lambda settings, db, store: actions.reroll(
        db, settings, load_table(settings.overrides_path), None, render_id, request, store=store,
        operator=True))


@app.command("pick")
def pick_cmd(
    render_id: RenderIdArg,
    shot: Annotated[int, typer.Option("--shot", help="The shot's number, from 1.",
                                      show_default=False)],
    take: Annotated[int, typer.Option("--take", help="The take the output should hold.",
                                      show_default=False)],
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Where to write the new MP4 (renders made here only).",
        show_default="the store; `shotline show` prints where")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Make the output hold another take of a shot, restitched from the stored clips (no
    vendor call). `shotline show` lists each shot's takes."""
    from .service import actions

    try:
        request = actions.PickRequest(take=take)
    except ValidationError as exc:
        raise InvalidRequest(inputs.explain(exc.errors(), "cli")) from None
    _review_action(render_id, output, json_out, lambda settings, db, store: actions.pick(
        db, settings, load_table(settings.overrides_path), None, render_id, shot, request,
        store=store, operator=True))


def _review_action(render_id: str, output: Path | None, json_out: bool,
                   act: Callable[[Settings, Database, Store], dict[str, Any]]) -> None:
    """A re-roll or a pick by the operator, then the render carried on (:func:`_carry_on`)."""
    settings, db, store = _open()
    try:
        row = lifecycle.get_render(db, render_id)
        if output is not None:
            api.output_path(output)  # a bad path is refused before anything is reserved
        view = act(settings, db, store)
    finally:
        db.close()
    _carry_on(settings, render_id, row, view, output, json_out)


def _carry_on(settings: Settings, render_id: str, row: dict[str, Any] | None,
              view: dict[str, Any], output: Path | None, json_out: bool) -> None:
    """After a re-roll or a pick: a render made here is made again right here (its stored
    shots from the store); the service's workers take theirs from here."""
    if view["status"] != "rendering" or row is None or row["options"] is not None:
        if json_out:
            _dump(view)
        else:
            out.print(f"{view['id']}: {view['status']}", highlight=False, markup=False)
        return
    plan = Plan.model_validate(view_plan(settings, render_id))
    try:
        with RenderDisplay(plan, err) as display:
            result = api.resume(render_id, settings=settings, listener=display, output=output)
    except Interrupted as exc:
        err.print(str(exc), highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    _print_result(result, json_out, False)


def view_plan(settings: Settings, render_id: str) -> Any:
    db, _ = api.open_store(settings)
    try:
        return (lifecycle.get_render(db, render_id) or {})["plan"]
    finally:
        db.close()


@app.command("cancel")
def cancel_cmd(render_id: RenderIdArg, json_out: JsonOpt = False) -> None:
    """Stop a render and cancel its vendor jobs that can be cancelled."""
    import asyncio

    from .service import actions

    _review(lambda s, db, _: asyncio.run(actions.cancel(
        db, s, load_table(s.overrides_path), None, render_id, operator=True)), json_out)


@app.command("requeue")
def requeue_cmd(render_id: RenderIdArg, json_out: JsonOpt = False) -> None:
    """Send an unfinished service render to the workers again (after the task queue lost
    its messages); nothing already submitted or stored is paid for again."""
    from .service import actions

    _review(lambda s, db, _: actions.requeue(db, s, None, render_id, operator=True), json_out)


def run(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default: the process's) and return its exit code,
    turning our errors into one ``error: ...`` line; tests call this in-process."""
    warnings.showwarning = _show_warning
    warnings.simplefilter("always", OverrideExpiredWarning)
    try:
        # Typer turns Ctrl-C (and typer.Exit) into an exit code that it returns here.
        code = app(args=argv, standalone_mode=False)
        return code if isinstance(code, int) else 0
    except ShotlineError as exc:
        # Messages carry users' and vendors' words: shown as text, never as Rich markup.
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        return 130
    except Exception as exc:
        # Usage errors (bad option, missing argument) know how to show themselves; typer
        # has moved them between packages, so recognise them by what they can do.
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            return code
        raise


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
