"""Caption and corpus templates for the demo world (all text written for fundus-vlp).

* :func:`make_caption` writes an expert-style caption for one rendered case: it names the condition and
  describes the findings the image really shows (counts, sizes, locations and colours come from the case),
  with several sentence structures, synonyms and a shuffled finding order.
* :func:`make_report` writes a case-level angiography report (one paragraph per imaged eye, then an
  impression) for the multi-image FFA cases, from the same finding phrases.
* :func:`make_corpus` writes text-only paragraphs (definitions, modality signs, differential diagnoses,
  finding-centred notes, grading rules, clinical notes) generated from the ontology, for MLM pre-training.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .ontology import CONDITIONS, FINDINGS, MODALITIES, conditions_for_modality
from .scene import Case, sample_case

__all__ = ["make_caption", "make_report", "make_corpus", "CORPUS_SECTIONS", "condition_phrase", "finding_phrases"]

Phrase = Callable[[dict, Case, np.random.Generator], str]


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _few(n: int) -> str:
    return "a few" if n <= 4 else "several" if n <= 9 else "many" if n <= 15 else "numerous"


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _pole(rng: np.random.Generator) -> str:
    return _pick(rng, ["at the posterior pole", "around the macula", "between the vascular arcades",
                       "temporal to the fovea", "near the fovea"])


def _haem_loc(p: dict, rng: np.random.Generator) -> str:
    return "in all four quadrants" if p["severity"] >= 0.6 else _pole(rng)


# ------------------------------------------------------------------------------------------ finding phrases
# Each entry: finding key -> list of phrase makers returning a noun phrase (lower case, no final period).
_CFP: dict[str, list[Phrase]] = {
    "microaneurysms": [
        lambda p, c, r: f"{_few(p['count'])} tiny red dots (microaneurysms) {_pole(r)}",
        lambda p, c, r: f"{_few(p['count'])} microaneurysms, seen as pinpoint red dots {_pole(r)}",
        lambda p, c, r: f"scattered small round red microaneurysms {_pole(r)}",
        lambda p, c, r: f"{p['count']} microaneurysms {_pole(r)}",
    ],
    "haemorrhages": [
        lambda p, c, r: f"{_few(p['count'])} dark red dot and blot haemorrhages {_haem_loc(p, r)}",
        lambda p, c, r: f"{_few(p['count'])} intraretinal blot haemorrhages {_haem_loc(p, r)}",
        lambda p, c, r: (f"{'large' if p['severity'] > 0.6 else 'medium-sized'} round dark red haemorrhages "
                         f"{_haem_loc(p, r)}"),
        lambda p, c, r: f"{_few(p['count'])} retinal haemorrhages {_haem_loc(p, r)}",
    ],
    "flame_haemorrhages": [
        lambda p, c, r: "flame-shaped haemorrhages along the vessels next to the optic disc",
        lambda p, c, r: f"{_few(p['count'])} splinter haemorrhages near the disc margin",
        lambda p, c, r: "feathery red streaks of nerve fibre layer haemorrhage around the disc",
    ],
    "hard_exudates": [
        lambda p, c, r: ("a circinate ring of waxy yellow exudates near the fovea" if p["ring"]
                         else "clusters of bright yellow hard exudates near the macula"),
        lambda p, c, r: "sharp-edged yellow lipid exudates close to the fovea",
        lambda p, c, r: (f"{'one group' if p['clusters'] == 1 else str(p['clusters']) + ' groups'} "
                         "of small bright yellow hard exudates at the macula"),
    ],
    "cotton_wool_spots": [
        lambda p, c, r: f"{_few(p['count'])} fluffy white cotton wool spots along the arcades",
        lambda p, c, r: f"{_few(p['count'])} soft white patches with feathery edges near the vessels",
        lambda p, c, r: (f"{'a cotton wool spot' if p['count'] == 1 else _few(p['count']) + ' cotton wool spots'} "
                         "close to the disc"),
    ],
    "venous_beading": [
        lambda p, c, r: "beaded, irregular veins",
        lambda p, c, r: "venous beading of the major veins",
        lambda p, c, r: "sausage-like swelling and narrowing along the veins",
    ],
    "drusen": [
        lambda p, c, r: (f"{_few(p['count'])} {'large soft' if p['large'] else 'small'} "
                         "yellow drusen clustered around the fovea"),
        lambda p, c, r: "multiple round yellow-white deposits at the macula",
        lambda p, c, r: f"{_few(p['count'])} drusen scattered across the macula",
        lambda p, c, r: f"{'confluent soft drusen' if p['large'] else 'small hard drusen'} centred on the fovea",
    ],
    "pigment_clumps": [
        lambda p, c, r: "small clumps of dark pigment at the macula",
        lambda p, c, r: "focal hyperpigmentation near the fovea",
    ],
    "macular_atrophy": [
        lambda p, c, r: (f"{'a sharply outlined pale patch' if p['count'] == 1 else 'sharply outlined pale patches'} "
                         "of atrophy near the fovea"),
        lambda p, c, r: "patchy yellow-white chorioretinal atrophy at the posterior pole",
    ],
    "tessellation": [
        lambda p, c, r: "a tessellated fundus in which the large choroidal vessels show through",
        lambda p, c, r: "diffuse tigroid tessellation of the background",
        lambda p, c, r: "a striped background with visible dark choroidal spaces",
    ],
    "peripapillary_atrophy": [
        lambda p, c, r: ("a small crescent of peripapillary atrophy" if p["severity"] < 0.45
                         else "a wide pale crescent of peripapillary atrophy on the temporal side of the disc"),
        lambda p, c, r: ("a thin pale rim of atrophy beside the disc" if p["severity"] < 0.45
                         else "a broad white crescent of atrophy beside the optic disc"),
    ],
    "tilted_disc": [
        lambda p, c, r: "a tilted, oval optic disc",
        lambda p, c, r: "an obliquely inserted disc",
    ],
    "disc_pallor": [
        lambda p, c, r: "a waxy pale optic disc",
        lambda p, c, r: "waxy pallor of the optic disc",
    ],
    "cup": [
        lambda p, c, r: f"an enlarged optic cup with a cup-to-disc ratio of about {c.disc['cdr']:.1f}",
        lambda p, c, r: "a large pale cup with a thin neuroretinal rim",
        lambda p, c, r: f"marked cupping of the optic disc (cup-to-disc ratio {c.disc['cdr']:.1f})",
        lambda p, c, r: "thinning of the neuroretinal rim around a deep, wide cup",
    ],
    "bone_spicules": [
        lambda p, c, r: "dark bone spicule pigment clumps in the mid-periphery",
        lambda p, c, r: f"{_few(p['count'])} black spidery pigment deposits scattered around the periphery",
        lambda p, c, r: "bone spicule pigmentation in all quadrants of the periphery",
    ],
    "arteriolar_narrowing": [
        lambda p, c, r: "narrowed arterioles",
        lambda p, c, r: "thin, thread-like arteries",
        lambda p, c, r: "generalised narrowing of the retinal arterioles",
        lambda p, c, r: "attenuated retinal vessels",
    ],
    "vessel_tortuosity": [
        lambda p, c, r: "tortuous, wavy retinal vessels",
        lambda p, c, r: "corkscrew tortuosity of the vessels",
        lambda p, c, r: "increased vessel tortuosity",
    ],
    "foveal_defect": [
        lambda p, c, r: (f"a round, sharply outlined red defect at the fovea, about "
                         f"{'half a' if p['severity'] > 0.6 else 'one third of a'} disc diameter across, "
                         "with a grey cuff"),
        lambda p, c, r: "a round full-thickness defect at the fovea",
        lambda p, c, r: "a punched-out red spot at the centre of the macula surrounded by a pale halo",
    ],
    "lens_haze": [
        lambda p, c, r: "a hazy, blurred view of the whole fundus",
        lambda p, c, r: "a diffuse veil that washes out the vessels and disc margins",
        lambda p, c, r: "poor detail through a cloudy lens, with the vessels barely visible",
    ],
}

_FFA: dict[str, list[Phrase]] = {
    "microaneurysms": [
        lambda p, c, r: f"{_few(p['count'])} pinpoint hyperfluorescent dots from microaneurysms",
        lambda p, c, r: "scattered bright microaneurysms at the posterior pole",
    ],
    "haemorrhages": [
        lambda p, c, r: "dark patches of blocked fluorescence from haemorrhages",
        lambda p, c, r: f"{_few(p['count'])} hypofluorescent blots where haemorrhages mask the dye",
    ],
    "flame_haemorrhages": [lambda p, c, r: "dark flame-shaped areas of blocked fluorescence near the disc"],
    "cotton_wool_spots": [
        lambda p, c, r: "small dark patches of capillary non-perfusion at cotton wool spots",
        lambda p, c, r: "focal hypofluorescent spots along the arcades",
    ],
    "venous_beading": [lambda p, c, r: "beaded, irregular veins"],
    "non_perfusion": [
        lambda p, c, r: "large dark areas of capillary non-perfusion in the mid-periphery",
        lambda p, c, r: "widespread capillary dropout with pruned vessels",
    ],
    "macular_edema": [
        lambda p, c, r: "diffuse late leakage of dye at the macula",
        lambda p, c, r: "petaloid hyperfluorescence from macular oedema",
        lambda p, c, r: "fuzzy leakage around the fovea",
    ],
    "drusen": [
        lambda p, c, r: "small round hyperfluorescent spots from staining drusen at the macula",
        lambda p, c, r: "punctate staining of drusen around the fovea",
    ],
    "pigment_clumps": [lambda p, c, r: "pinpoint blocked fluorescence from pigment clumps"],
    "macular_atrophy": [lambda p, c, r: "a bright window defect over patchy atrophy"],
    "peripapillary_atrophy": [lambda p, c, r: "a bright crescent of window defect beside the disc"],
    "bone_spicules": [
        lambda p, c, r: "mottled hyperfluorescence in the mid-periphery with dark blocking spicules",
        lambda p, c, r: "window defects in the periphery broken by dark pigment spicules",
    ],
    "arteriolar_narrowing": [lambda p, c, r: "narrow, thread-like arterioles", lambda p, c, r: "attenuated arteries"],
    "vessel_tortuosity": [lambda p, c, r: "tortuous, wavy vessels"],
    "foveal_defect": [
        lambda p, c, r: "a round hyperfluorescent window defect at the fovea",
        lambda p, c, r: "a small bright disc of transmitted fluorescence at the foveal centre",
    ],
}

_OCT: dict[str, list[Phrase]] = {
    "macular_edema": [
        lambda p, c, r: (f"{'a few' if p['severity'] < 0.5 else 'many'} dark cystoid fluid spaces in the inner retina "
                         "around the fovea"),
        lambda p, c, r: "intraretinal cysts with thickening of the central retina",
        lambda p, c, r: "cystoid macular oedema with a blunted foveal pit",
    ],
    "hard_exudates": [lambda p, c, r: "bright hyperreflective dots in the outer plexiform layer"],
    "drusen": [
        lambda p, c, r: f"{_few(max(3, p['count'] // 5))} dome-shaped elevations of the retinal pigment epithelium",
        lambda p, c, r: "drusen lifting the RPE band into small bumps",
        lambda p, c, r: "an undulating RPE with sub-RPE deposits",
    ],
    "macular_atrophy": [lambda p, c, r: "a segment of RPE loss with increased light transmission into the choroid"],
    "staphyloma": [
        lambda p, c, r: "a steeply curved posterior wall with a thin choroid",
        lambda p, c, r: "a deep posterior staphyloma with thinning of the retina and choroid",
    ],
    "outer_retinal_loss": [
        lambda p, c, r: "loss of the ellipsoid zone outside the central fovea",
        lambda p, c, r: "thinning of the outer nuclear layer, with the photoreceptor bands kept only at the centre",
    ],
    "foveal_defect": [
        lambda p, c, r: "a full-thickness gap in the neurosensory retina at the fovea with cystic edges",
        lambda p, c, r: "a round hole through all retinal layers at the foveal centre, the RPE intact below",
    ],
}

PHRASES: dict[str, dict[str, list[Phrase]]] = {"CFP": _CFP, "FFA": _FFA, "OCT": _OCT}

_NORMAL = {
    "CFP": ["a pink optic disc with a small central cup", "a darker macula with a foveal reflex",
            "retinal vessels of normal calibre", "no haemorrhages, exudates or drusen"],
    "FFA": ["normal filling of the retinal vessels", "a dark, round foveal avascular zone",
            "no leakage or non-perfusion"],
    "OCT": ["a normal foveal pit", "well-ordered retinal layers", "a smooth, continuous RPE band"],
}
# Short negative or context notes that sharpen the contrast between neighbouring conditions.
_EXTRA = {
    "mild diabetic retinopathy": ["No haemorrhages or exudates are present.", "There are no other lesions."],
    "glaucoma": ["The macula and vessels look normal.", "The rest of the fundus is unremarkable."],
    "cataract": ["The optic disc is only faintly seen.", "Fine detail cannot be assessed."],
    "macular hole": ["The rest of the retina looks normal."],
    "severe diabetic retinopathy": ["There are no new vessels."],
}
_OPENERS = {
    "CFP": ["Colour fundus photograph of the {eye} eye", "Fundus photograph of the {eye} eye",
            "Colour fundus image of the {eye} eye", "Posterior pole photograph of the {eye} eye"],
    "FFA": ["Fluorescein angiogram of the {eye} eye", "Fundus fluorescein angiography of the {eye} eye",
            "Venous phase FFA image of the {eye} eye", "Mid-phase fluorescein angiogram of the {eye} eye"],
    "OCT": ["Horizontal OCT B-scan through the fovea of the {eye} eye",
            "Optical coherence tomography of the {eye} macula", "OCT section through the {eye} macula"],
}
_NORMAL_NAMES = {"CFP": ["a normal fundus", "a healthy, normal eye", "normal findings"],
                 "FFA": ["a normal angiogram", "normal findings"], "OCT": ["a normal macula", "normal findings"]}


def condition_phrase(name: str, modality: str, rng: np.random.Generator, synonym_p: float = 0.2) -> str:
    """The words used to name a condition: usually its label, sometimes a synonym (teaches synonyms)."""
    if name == "normal":
        return _pick(rng, _NORMAL_NAMES[modality])
    syn = CONDITIONS[name].synonyms
    if syn and rng.random() < synonym_p:
        return _pick(rng, list(syn))
    return name


def finding_phrases(case: Case, rng: np.random.Generator) -> list[str]:
    """Noun phrases describing every finding of ``case`` that its modality shows (shuffled)."""
    bank = PHRASES[case.modality]
    out = [_pick(rng, bank[k])(p, case, rng) for k, p in case.findings.items() if k in bank]
    return [out[i] for i in rng.permutation(len(out))]


def make_caption(case: Case, rng: np.random.Generator, min_words: int = 15, max_words: int = 60) -> str:
    """An expert-style caption for ``case`` (15-60 words) that names the condition and describes its findings."""
    names = [condition_phrase(n, case.modality, rng) for n in case.conditions]
    name = _join(names)
    normal = _NORMAL[case.modality]
    phrases = finding_phrases(case, rng) or [normal[i] for i in rng.permutation(len(normal))]
    opener = _pick(rng, _OPENERS[case.modality]).format(eye=case.eye)
    extras = [e for n in case.conditions for e in _EXTRA.get(n, [])]
    for attempt in range(len(phrases)):
        ph = phrases[: len(phrases) - attempt]  # drop phrases from the end until the caption fits
        structure = int(rng.integers(5))
        link = _pick(rng, ["consistent with", "in keeping with", "typical of", "suggestive of"])
        if structure == 0:
            text = f"{opener} shows {_join(ph)}, {link} {name}."
        elif structure == 1:
            # Sentence frames that need no verb agreement with the phrase.
            sents = [_pick(rng, ["There is evidence of {p}.", "We note {p}.", "The image shows {p}.",
                                 "Note {p}.", "Also seen: {p}."]).format(p=p) for p in ph]
            concl = _pick(rng, [f"These findings are {link} {name}.", f"Impression: {name}.", f"Diagnosis: {name}.",
                                f"The appearance is {link} {name}."])
            text = f"{opener}. " + " ".join(sents) + " " + concl
        elif structure == 2:
            text = f"{_cap(name)}: {opener[0].lower() + opener[1:]} showing {_join(ph)}."
        elif structure == 3:
            text = f"{opener} with {name}. It shows {_join(ph)}."
        else:
            text = f"{_cap(_join(ph))}. {opener}, {link} {name}."
        if extras and rng.random() < 0.5:
            text += " " + _pick(rng, extras)
        n = len(text.split())
        if n < min_words:
            text += " " + _pick(rng, ["Image quality is adequate for grading.",
                                      "Both the disc and the macula are in view.",
                                      "The field is centred on the macula with the disc in view."])
            n = len(text.split())
        if n <= max_words:
            return text
    return " ".join(text.split()[:max_words - 1]) + "."


_REPORT_LEADS = ("{Eye} eye: {p}.", "The {eye} eye shows {p}.", "The angiogram of the {eye} eye shows {p}.")
_NORMAL_FFA = ("no abnormal fluorescence", "normal filling of the retinal vessels and no leakage",
               "a normal angiogram")


def make_report(eyes: list[Case], rng: np.random.Generator, max_words: int = 30) -> str:
    """A case-level FFA report: one sentence per imaged eye listing its findings, then an impression naming
    the condition of each eye (``eyes``: one or two cases of one patient, modality FFA, distinct sides).

    Findings are dropped from the longest list until the report fits ``max_words`` (so a short decoder
    context still reaches the impression); every eye keeps at least one finding.
    """
    phrases = [finding_phrases(case, rng) or [_pick(rng, _NORMAL_FFA)] for case in eyes]
    leads = [_pick(rng, _REPORT_LEADS) for _ in eyes]
    names = {c.eye: _join([condition_phrase(n, "FFA", rng, synonym_p=0.0) for n in c.conditions]) for c in eyes}
    if len(eyes) == 2 and len(set(names.values())) == 1:
        impression = f"{names[eyes[0].eye]} in both eyes"
    else:
        impression = "; ".join(f"{names[c.eye]} in the {c.eye} eye" for c in eyes)
    closing = f"{_pick(rng, ['Impression:', 'Diagnosis:', 'Conclusion:'])} {impression}."

    def render(phrases: list[list[str]]) -> str:
        parts = [lead.format(eye=c.eye, Eye=_cap(c.eye), p=_join(ph)) for lead, c, ph in zip(leads, eyes, phrases)]
        return " ".join(parts + [closing])

    return fitted_report(phrases, render, lambda text: len(text.split()) <= max_words)


def fitted_report(phrases: list[list[str]], render: Callable[[list[list[str]]], str],
                  fits: Callable[[str], bool]) -> str:
    """``render(phrases)`` (one finding list per eye) after dropping the last finding of the longest list
    until the text ``fits``; every eye keeps at least one finding. Shared by the English and Chinese reports."""
    phrases = [list(p) for p in phrases]
    while True:
        text = render(phrases)
        longest = max(range(len(phrases)), key=lambda i: len(phrases[i]))
        if fits(text) or len(phrases[longest]) == 1:
            return text
        phrases[longest] = phrases[longest][:-1]


# ---------------------------------------------------------------------------------------------------- corpus
_CLINICAL = {
    "normal": "A normal eye has a pink disc with a small cup, a darker macula and regular vessels without lesions.",
    "glaucoma": "Patients often notice nothing until late, because the loss of side vision starts slowly and "
                "painlessly; raised eye pressure is a common but not a necessary feature.",
    "mild diabetic retinopathy": "Vision is normally unaffected at this stage, which is why people with diabetes "
                                 "are screened every year.",
    "moderate diabetic retinopathy": "Vision may blur when fluid collects at the macula, and closer follow-up "
                                     "is needed.",
    "severe diabetic retinopathy": "The risk of progression to new vessel growth within a year is high, and "
                                   "laser or injection treatment is often considered.",
    "age related macular degeneration": "Patients notice distorted or blurred central vision while the side "
                                        "vision is kept.",
    "hypertensive retinopathy": "Its severity follows the level and duration of high blood pressure, and it improves "
                                "when the pressure is controlled.",
    "pathologic myopia": "It affects eyes with a very long axial length and can cause sudden central distortion "
                         "when new vessels grow under the macula.",
    "cataract": "Patients notice gradual blurring, glare from lights and faded colours; surgery replaces the "
                "cloudy lens.",
    "macular hole": "Patients notice a central blind spot and distortion of straight lines; surgery can often "
                    "close the hole.",
    "retinitis pigmentosa": "Night blindness comes first, followed by a slowly shrinking field of vision.",
}

CORPUS_SECTIONS = ("definitions", "modalities", "differentials", "findings", "grading", "clinical")


def _display(name: str) -> str:
    return "a normal fundus" if name == "normal" else name


def _typical(name: str, modality: str, rng: np.random.Generator) -> list[str]:
    # Phrases from a freshly sampled case: the corpus describes the same signs as the captions, in other words.
    return finding_phrases(sample_case(name, modality, rng), rng) or list(_NORMAL[modality])


def _definition(name: str, rng: np.random.Generator) -> str:
    c = CONDITIONS[name]
    if name == "normal":
        return "A normal fundus shows " + _join(_NORMAL["CFP"]) + "."
    syn = f" (also called {_join(list(c.synonyms))})" if c.synonyms else ""
    signs = [FINDINGS[s.finding] for s in c.findings if "CFP" in FINDINGS[s.finding].modalities]
    text = f"{_cap(name)}{syn} is {c.definition}."
    if signs:
        text += " " + _pick(rng, ["On fundus photographs it shows ", "Its signs on colour photographs are ",
                                  "Typical fundus signs include "])
        text += _join([f"{f.label} ({f.summary})" for f in signs]) + "."
    else:
        others = [FINDINGS[s.finding].label for s in c.findings]
        text += " Its signs are best seen with " + ("OCT" if others else "imaging") + ": " + _join(others) + "."
    return text


def _modalities(name: str, rng: np.random.Generator) -> str:
    parts = []
    for m in CONDITIONS[name].modalities:
        ph = _typical(name, m, rng)
        lead = {"CFP": "On colour fundus photographs", "FFA": "On fluorescein angiography", "OCT": "On OCT"}[m]
        parts.append(f"{lead}, {_display(name)} shows {_join(ph)}.")
    return " ".join(parts)


def _differential(name: str, rng: np.random.Generator) -> str:
    c = CONDITIONS[name]
    other = _pick(rng, list(c.differentials))
    a, b = _display(name), _display(other)
    mine = _typical(name, "CFP", rng)
    theirs = _typical(other, "CFP", rng)
    key = [k for k in c.finding_keys if k not in CONDITIONS[other].finding_keys]
    key = [k for k in key if "CFP" in FINDINGS[k].modalities] or key  # prefer a sign both texts describe
    text = f"{_cap(a)} must be told apart from {b}. {_cap(a)} shows {_join(mine)}, whereas {b} shows {_join(theirs)}."
    if key:
        text += f" The deciding sign is {FINDINGS[_pick(rng, key)].label}."
    return text


def _finding_note(key: str, rng: np.random.Generator) -> str:
    f = FINDINGS[key]
    where = [n for n, c in CONDITIONS.items() if key in c.finding_keys]
    mods = _join([{"CFP": "colour photographs", "FFA": "angiograms", "OCT": "OCT scans"}[m] for m in f.modalities])
    place = "affects the whole fundus" if f.location == "diffuse" else f"usually lies at the {f.location}"
    text = f"{_cap(f.label)}: {f.summary}. It is seen on {mods}, {place}"
    return text + (f" and occurs in {_join(where)}." if where else ".")


def _grading(rng: np.random.Generator) -> str:
    variants = [
        "Diabetic retinopathy is graded by its lesions. In mild diabetic retinopathy microaneurysms are the only sign. "
        "Moderate diabetic retinopathy adds dot and blot haemorrhages, hard exudates and sometimes cotton wool spots. "
        "Severe diabetic retinopathy shows many haemorrhages in all four quadrants, venous beading and cotton wool "
        "spots.",
        "The difference between no diabetic retinopathy and mild diabetic retinopathy is small: a few tiny red dots, "
        "the microaneurysms, near the macula. Graders must look closely, because nothing else changes.",
        "When haemorrhages spread to all four quadrants, or the veins become beaded, the retinopathy is severe. "
        "Angiography then shows dark areas of capillary non-perfusion and leakage at the macula.",
        "Hard exudates are yellow lipid deposits left by leaking vessels; a ring of them around the fovea points "
        "to macular oedema, which OCT confirms as dark cystoid fluid spaces in a thickened retina.",
    ]
    return _pick(rng, variants)


def _clinical(name: str, rng: np.random.Generator) -> str:
    syn = CONDITIONS[name].synonyms
    lead = _cap(_display(name)) + (f", or {_pick(rng, list(syn))}," if syn and name != "normal" else "")
    signs = _typical(name, "CFP", rng)[:3]
    verb = _pick(rng, ["is recognised by", "is identified by", "shows"])
    return f"{lead} {verb} {_join(signs)}. {_CLINICAL[name]}"


def make_corpus(n_paragraphs: int, rng: np.random.Generator) -> dict[str, list[str]]:
    """``n_paragraphs`` paragraphs grouped by section (file stem -> paragraphs).

    Conditions and sections are cycled so every condition appears in every section once ``n_paragraphs`` is
    at least (number of conditions x number of sections).
    """
    names = list(CONDITIONS)
    keys = list(FINDINGS)
    out: dict[str, list[str]] = {s: [] for s in CORPUS_SECTIONS}
    for i in range(n_paragraphs):
        section = CORPUS_SECTIONS[i % len(CORPUS_SECTIONS)]
        j = i // len(CORPUS_SECTIONS)
        name = names[j % len(names)]
        if section == "definitions":
            text = _definition(name, rng)
        elif section == "modalities":
            text = _modalities(name, rng)
        elif section == "differentials":
            text = _differential(name, rng) if CONDITIONS[name].differentials else _definition(name, rng)
        elif section == "findings":
            text = _finding_note(keys[j % len(keys)], rng)
        elif section == "grading":
            text = _grading(rng) if j % 2 == 0 else _clinical(name, rng)
        else:
            text = _clinical(name, rng)
        out[section].append(text)
    return {k: v for k, v in out.items() if v}


# Every modality a condition lists must have a phrase bank (or the normal description) - checked at import.
assert all(m in PHRASES for m in MODALITIES)
assert all(conditions_for_modality(m) for m in MODALITIES)
