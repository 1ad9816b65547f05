"""Takes: several candidates of one shot, rendered side by side, one of them picked.

A shot with takes lists every candidate's take number in ``PlannedShot.takes``; its
``take`` is the picked one (the first, until a reviewer picks another). The output is made
of the picked takes only; the others are rendered, billed and stored with it.

Every candidate not picked has a slot of its own in the render after the shots (from
``len(plan.shots)`` on, in shot order, then take order), so each driver makes it like any
other shot: it is reserved for, authorized, billed and stored by the same steps. Slots
are laid out again from the plan whenever a pick or a re-roll changes it.
"""

from __future__ import annotations

from ..errors import BriefError
from .capabilities import Capabilities
from .keys import planned_key
from .planner import Plan, PlannedShot


def candidates(shot: PlannedShot) -> tuple[int, ...]:
    """The take numbers of every candidate of ``shot`` (the picked one among them)."""
    return shot.takes or (shot.take,)


def with_takes(shot: PlannedShot, count: int, first: int | None = None) -> PlannedShot:
    """``shot`` with ``count`` candidates numbered from ``first`` (its take), the first picked."""
    start = shot.take if first is None else first
    return shot.model_copy(update={
        "take": start, "takes": tuple(range(start, start + count)) if count > 1 else ()})


def extras(plan: Plan) -> list[PlannedShot]:
    """The candidates not picked, each as a shot whose ``index`` is its slot."""
    out: list[PlannedShot] = []
    for shot in plan.shots:
        for take in candidates(shot):
            if take != shot.take:
                out.append(shot.model_copy(update={
                    "index": len(plan.shots) + len(out), "take": take, "takes": ()}))
    return out


def slot_owner(plan: Plan, slot: int) -> int:
    """The index of the shot a slot belongs to (a shot's own slot is its index)."""
    if slot < len(plan.shots):
        return slot
    return _owners(plan)[slot - len(plan.shots)]


def _owners(plan: Plan) -> list[int]:
    return [s.index for s in plan.shots for t in candidates(s) if t != s.take]


def check_unchained(plan: Plan, number: int) -> None:
    """Refuse takes of a shot in a chain: a continuation starts from one take's last frame,
    so choosing another take of the shot before would mean rendering the next one again."""
    shots = plan.shots
    if shots[number - 1].continues:
        raise BriefError(f"shot {number} continues shot {number - 1} from its last frame: it "
                         "cannot have takes to choose from; re-roll it with one take, or "
                         "render with --no-chain")
    if number < len(shots) and shots[number].continues:
        raise BriefError(f"shot {number + 1} starts from the last frame of shot {number}, so "
                         f"shot {number} cannot have takes to choose from; re-roll it with one "
                         "take, or render with --no-chain")


def has_takes(plan: Plan) -> bool:
    return any(len(candidates(s)) > 1 for s in plan.shots)


def pick(plan: Plan, number: int, take: int) -> Plan:
    """``plan`` with take ``take`` picked for shot ``number`` (from 1); BriefError, naming
    what exists, for a shot or take the render does not have."""
    if not 1 <= number <= len(plan.shots):
        raise BriefError(f"no shot {number}: this render has shots 1 to {len(plan.shots)}")
    shot = plan.shots[number - 1]
    have = candidates(shot)
    if take not in have:
        listed = ", ".join(str(t) for t in have)
        raise BriefError(f"shot {number} has no take {take}: its takes are {listed}")
    if take != shot.take:
        check_unchained(plan, number)
    shots = list(plan.shots)
    shots[number - 1] = shot.model_copy(update={"take": take})
    return plan.model_copy(update={"shots": tuple(shots)})


def check_count(count: int, most: int, name: str = "takes") -> int:
    """A number of takes, checked against the operator's limit (``SHOTLINE_MAX_TAKES``)."""
    if not 1 <= count <= most:
        raise BriefError(f"{name} {count}: a shot may have 1 to {most} takes "
                         "(SHOTLINE_MAX_TAKES)")
    return count


def every_key(plan: Plan, caps: Capabilities) -> list[str]:
    """The keys of every call a render of ``plan`` makes: its shots, then the other takes."""
    return [planned_key(plan, s, caps) for s in (*plan.shots, *extras(plan))]
