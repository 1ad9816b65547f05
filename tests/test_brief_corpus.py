"""Briefs as people write them, with the traps that used to cost money: each one must plan
the way a person reading it would expect (shot count, durations, hints, style, prompts).

The model is ``local/preview`` (any whole second from 1 to 15) unless a case names one.
Without a target, a shot lasts what its words take to read at 2.5 words (or 4 CJK
characters) a second, at least 5 s, rounded to the nearest allowed duration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shotline.core.brief import parse_brief
from shotline.core.capabilities import load_table
from shotline.core.planner import PlanOptions, plan

BRIEFS = Path("/work/shared/briefs")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@dataclass(frozen=True)
class Case:
    text: str
    seconds: list[int]  # every call's duration, in order
    hints: list[str | None] | None = None  # the text read as each call's duration
    style: str | None = None  # must end every prompt as "Style: ..."
    title: str | None = None
    keep: dict[int, str] = field(default_factory=dict)  # call -> words its prompt keeps
    drop: tuple[str, ...] = ()  # text no prompt may contain (markup, preamble)
    model: str = "local/preview"
    target: float | None = None


NONE2 = [None, None]

CASES: dict[str, Case] = {
    # --- ages, years, decades: never durations -------------------------------------
    "screenplay-age": Case(
        "INT. DINER - NIGHT\n\nMAYA (30s) wipes the counter.\n\nCUT TO:\n\n"
        "EXT. STREET - NIGHT\n\nRain hammers the neon sign.\n",
        [5, 5], NONE2, keep={0: "MAYA (30s) wipes"}, drop=("CUT TO", "INT.")),
    "cue-with-age": Case(
        "INT. KITCHEN - DAY\n\nMAYA (40s)\nWhere were you?\n\nTOM (12)\nOut.\n",
        [5], [None], keep={0: "MAYA (40s) Where were you? TOM (12) Out."}),
    "year-in-parentheses": Case(
        "A diner in Ohio (1950s). A jukebox glows.", [5], [None], keep={0: "Ohio (1950s)."}),
    "decade-attached": Case(
        "Shot 1: A jukebox from the (60s) plays.\nShot 2: Couples dance.",
        [5, 5], NONE2, keep={0: "the (60s) plays."}),
    "decade-at-the-end": Case(
        "Shot 1: A diner in Ohio (1950s)\nShot 2: A jukebox (60s)", [5, 5], NONE2,
        keep={0: "(1950s)", 1: "(60s)"}),
    "ages-in-prose": Case(
        "Shot 1: A woman in her 30s reads.\nShot 2: A man in his 60s naps.", [5, 5], NONE2,
        keep={0: "her 30s", 1: "his 60s"}),
    "name-then-duration": Case(
        "- Close on MAYA (5 s)\n- The door opens.", [5, 5], NONE2, keep={0: "MAYA (5 s)"}),
    "decade-after-dash": Case(
        "- The band plays — 60s\n- The crowd sways.", [5, 5], NONE2, keep={0: "— 60s"}),
    # --- durations in dialogue: never hints ---------------------------------------------
    "quoted-dialogue": Case(
        'Shot 1: She says "give me 10 seconds (10 s)"\nShot 2: He waits.', [5, 5], NONE2,
        keep={0: "(10 s)"}),
    "screenplay-dialogue": Case(
        "INT. KITCHEN - NIGHT\nTom stares at the clock.\n\nTOM\nTen more minutes — 30 seconds.\n",
        [6], [None], keep={0: "30 seconds"}),
    "inline-dialogue": Case(
        "Shot 1: MAYA: Hold it — 5 seconds\nShot 2: She runs.", [5, 5], NONE2,
        keep={0: "5 seconds"}),
    # --- hints standing alone at a shot's start or end ----------------------------------
    "hint-after-the-sentence": Case(
        "Shot 1: A gull dives. (4 s)\nShot 2: A boat drifts. (3 s)", [4, 3], ["(4 s)", "(3 s)"],
        keep={0: "A gull dives.", 1: "A boat drifts."}, drop=("(4 s)", "(3 s)")),
    "hint-closing-the-sentence": Case(
        "Shot 1: A gull dives (4s).\nShot 2: A boat drifts [2.5 sec]", [4, 3],
        ["(4s)", "[2.5 sec]"], keep={0: "A gull dives.", 1: "A boat drifts"}, drop=("sec",)),
    "hint-at-the-start": Case(
        "Shot 1: (4 s) A gull dives.\nShot 2: (6 s) A boat drifts.", [4, 6], ["(4 s)", "(6 s)"]),
    "hint-in-the-label": Case(
        "Shot 1 (4 s): A gull dives.\nShot 2 — 6 s: A boat drifts.", [4, 6], ["(4 s)", "6 s"],
        keep={1: "A boat drifts."}),
    "hint-after-a-dash": Case(
        "- A gull dives — 6 seconds\n- A boat.", [6, 5], ["— 6 seconds", None],
        keep={0: "A gull dives"}, drop=("seconds",)),
    "hint-on-its-own-line": Case(
        "## Opening\nA foggy bridge at dawn.\n(7 s)\n\n## Close\nThe sun breaks through.",
        [7, 5], ["(7 s)", None], drop=("(7 s)", "##")),
    "spanish-hint": Case(
        "Escena 1: Un gato duerme (4 segundos).\nEscena 2: Un perro ladra.", [4, 5],
        ["(4 segundos)", None], keep={0: "Un gato duerme."}),
    "chinese-hint": Case(
        "镜头1：一只猫在窗台上睡觉（3秒）。\n镜头2：一只狗在草地上奔跑。", [3, 5], ["（3秒）", None],
        keep={0: "一只猫在窗台上睡觉。"}),
    "timecodes": Case(
        (BRIEFS / "coffee-timecoded.txt").read_text("utf-8"), [4, 8, 4, 4],
        ["[00:00-00:04]", "[00:04-00:12]", "[00:12-00:16]", "[00:16-00:20]"], drop=("00:",)),
    "yaml-fields": Case(
        (BRIEFS / "product-launch.yaml").read_text("utf-8"), [8, 8, 8],
        [None, "seconds: 8", None], style="soft pastel palette, handheld camera, natural light",
        title="Spring collection teaser"),
    # --- titles and styles, in many languages: never shots, style on every prompt ----
    "title-then-style": Case(
        "Morning Run\nStyle: bright studio light\n\nShot 1: A runner laces up.\n"
        "Shot 2: She sprints.\n", [5, 5], style="bright studio light", title="Morning Run",
        drop=("Morning Run",)),
    "shared-sneaker-ad": Case(
        (BRIEFS / "sneaker-ad.md").read_text("utf-8"), [5, 6, 5, 5, 6],  # 14 words: 5.6 s
        style="bright studio light, clean white background, crisp commercial look, the same "
              "white running shoe in every shot.", drop=("Shot ",)),
    "spanish-estilo": Case(
        "Título: Mañana\nEstilo: cálido, cámara en mano\n\nEscena 1: Un gato duerme.\n"
        "Escena 2: Un perro ladra.", [5, 5], style="cálido, cámara en mano", title="Mañana",
        drop=("Estilo", "Título")),
    "german-stil": Case(
        "Stil: körniger 16-mm-Film\n\n1. Ein Zug fährt ein.\n2. Eine Frau steigt aus.", [5, 5],
        style="körniger 16-mm-Film"),
    "french-style": Case(
        "Style : lumière dorée\n\n- Un bateau quitte le port.\n- Une mouette plonge.", [5, 5],
        style="lumière dorée"),
    "italian-stile": Case(
        "Stile: bianco e nero\n\nScena 1: Un caffè fuma.\nScena 2: Piove sulla piazza.", [5, 5],
        style="bianco e nero"),
    "japanese-style": Case(
        "スタイル：水彩画\n\nカット1：猫が眠る。\nカット2：犬が走る。", [5, 5], style="水彩画",
        drop=("スタイル",)),
    "chinese-style": Case(
        "风格：水墨画\n\n镜头1：一只猫在窗台上。\n镜头2：一只狗在草地上奔跑。", [5, 5], style="水墨画"),
    "korean-style": Case(
        "스타일: 따뜻한 빛\n\n장면 1: 고양이가 잔다.\n장면 2: 개가 짖는다.", [5, 5], style="따뜻한 빛"),
    "russian-style": Case(
        "Стиль: зернистая плёнка\n\nКадр 1: Кот спит.\nКадр 2: Собака лает.", [5, 5],
        style="зернистая плёнка"),
    "greek-style": Case(
        "Στυλ: ασπρόμαυρο\n\n1. Ένα πλοίο φεύγει.\n2. Ένας γλάρος βουτά.", [5, 5],
        style="ασπρόμαυρο"),
    "arabic-style": Case(
        "أسلوب: ألوان دافئة\n\n1. منارة في الليل.\n2. الأمواج تتكسر على الصخور.", [5, 5],
        style="ألوان دافئة", keep={1: "الأمواج تتكسر على الصخور."}),
    "hebrew-style": Case(
        "סגנון: שחור לבן\n\n1. ילד רץ בשדה.\n2. כלב נובח.", [5, 5], style="שחור לבן",
        keep={0: "ילד רץ בשדה."}),
    "bold-style-and-headings": Case(
        "**Style:** neon noir\n\n## Shot 1\nRain on glass.\n\n## Shot 2\nA taxi passes.",
        [5, 5], style="neon noir", keep={0: "Rain on glass.", 1: "A taxi passes."}),
    "style-at-the-end": Case(
        "Shot 1: Rain.\nShot 2: A taxi.\n\nStyle: neon noir", [5, 5], style="neon noir"),
    "markdown-title": Case(
        "# The Last Light\n\nStyle: noir\n\n## Opening\nA foggy bridge.\n\n## Close\n"
        "The sun breaks through.", [5, 5], style="noir", title="The Last Light",
        drop=("Last Light",)),
    "screenplay-title": Case(
        "THE LIGHTHOUSE\n\nFADE IN:\n\nEXT. COAST - NIGHT\n\nA beam sweeps the rocks.",
        [5], title="THE LIGHTHOUSE", keep={0: "Exterior, coast, night. A beam"},
        drop=("LIGHTHOUSE", "FADE")),
    "title-case-paragraphs": Case(
        "The Harbor\n\nMist hangs over the water.\n\nA fisherman coils rope.", [5, 5],
        title="The Harbor", drop=("Harbor",)),
    "sentence-case-is-a-shot": Case(
        "A lake at dawn\n\nA heron lands", [5, 5], keep={0: "A lake at dawn"}),
    # --- unformatted prose, CJK and right-to-left: split at sentence ends --------------
    "nine-sentence-paragraph": Case(
        "The city wakes slowly under a grey sky. A baker pulls loaves from a glowing oven. "
        "Steam curls from a manhole on the empty avenue. A cyclist weaves between parked "
        "vans. Pigeons scatter from the steps of the old library. A woman opens the shutters "
        "of her flower stall. Buses hum past shuttered cafes. The first rays of sun hit the "
        "glass towers. The street fills with people.",
        [12, 15], keep={0: "The city wakes", 1: "The street fills with people."}),
    "nine-sentences-on-kling": Case(
        "The city wakes slowly under a grey sky. A baker pulls loaves from a glowing oven. "
        "Steam curls from a manhole on the empty avenue. A cyclist weaves between parked "
        "vans. Pigeons scatter from the steps of the old library. A woman opens the shutters "
        "of her flower stall. Buses hum past shuttered cafes. The first rays of sun hit the "
        "glass towers. The street fills with people.",
        [10, 10, 10], model="fal/kling-video-v2.6-pro"),
    "abbreviations": Case(
        "Dr. Ames enters the lab at dawn and switches on every lamp along the bench. "
        "Mr. Lee follows with a tray of samples and sets them down beside the microscope. "
        "They work in silence while the city wakes outside the tall windows. "
        "At noon St. Clair knocks on the glass and waves a newspaper at them.",
        [12, 10], keep={0: "Dr. Ames", 1: "St. Clair knocks"}),
    "chinese-prose": Case(
        "清晨的城市在灰色的天空下慢慢醒来。面包师从发光的烤箱里拿出一条条面包。"
        "空荡荡的大街上，井盖里冒出缕缕蒸汽。骑自行车的人在停着的货车之间穿行。"
        "鸽子从老图书馆的台阶上四散飞起。一位女士打开了花店的百叶窗。",
        [12, 11], keep={0: "清晨的城市", 1: "一位女士打开了花店的百叶窗。"}),
    "arabic-prose": Case(
        "تستيقظ المدينة ببطء تحت سماء رمادية وغيوم ثقيلة فوق البحر القديم. "
        "يخرج الخباز أرغفة الخبز الساخنة من الفرن المتوهج في زاوية الشارع الضيق. "
        "هل يسمع أحد صوت الباعة في السوق المزدحم؟ "
        "تمر الحافلات ببطء أمام المقاهي المغلقة وتضيء الشمس الأبراج الزجاجية العالية. "
        "يمتلئ الشارع بالناس والأصوات والألوان مع ارتفاع الشمس فوق المدينة كلها.",
        [9, 12], keep={0: "تستيقظ المدينة", 1: "فوق المدينة كلها."}),
    "hebrew-prose-with-a-target": Case(
        "העיר מתעוררת לאט. האופה מוציא לחם מהתנור. אוטובוס עובר ברחוב. השמש עולה מעל הים.",
        [6, 6], target=12, model="local/sim", keep={1: "השמש עולה מעל הים."}),
    "hebrew-prose-on-one-call": Case(
        "העיר מתעוררת לאט. האופה מוציא לחם מהתנור. אוטובוס עובר ברחוב. השמש עולה מעל הים.",
        [8], target=8, model="local/sim", keep={0: "העיר מתעוררת לאט."}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_brief_plans_as_a_person_expects(name: str) -> None:
    case = CASES[name]
    caps = load_table().get(case.model)
    brief = parse_brief(case.text)
    p = plan(brief, caps, PlanOptions(seconds=case.target))
    assert [s.seconds for s in p.shots] == case.seconds, [s.prompt for s in p.shots]
    assert p.billed_seconds == sum(case.seconds)
    if case.hints is not None:
        assert [s.hint for s in p.shots] == case.hints
    assert p.style == case.style and brief.style == case.style
    assert brief.title == case.title
    for shot in p.shots:
        body = shot.prompt
        if case.style:
            assert body.endswith(f"Style: {case.style}"), body
            body = body[: -len(f"Style: {case.style}")]
        else:
            assert "Style:" not in body
        for text in case.drop:
            assert text not in body, (text, body)
        # Every call's source is text of the brief itself.
        assert case.text[shot.source[0]:shot.source[1]].strip()
    if len(p.shots) > len(brief.segments):  # split: only ever at a sentence's end
        for shot in p.shots:
            assert case.text[shot.source[0]:shot.source[1]].rstrip()[-1] in ".!?。！？؟"
    for index, words in case.keep.items():
        assert words in p.shots[index].prompt, p.shots[index].prompt


def test_the_corpus_covers_every_trap() -> None:
    assert len(CASES) >= 30
    styled = [c for c in CASES.values() if c.style]
    assert len({c.style for c in styled}) >= 10  # styles in at least six languages
