"""The demo world's ontology: findings -> conditions -> modalities (plain data, no rendering).

Three layers (see ``docs/data.md#the-demo-world``):

* **Findings** are visual primitives (a drawing with a location and a severity in [0, 1]). Each names the
  modalities in which it is visible; the renderers know how to draw each one.
* **Conditions** are named combinations of findings. ``seen`` conditions may appear as categorical labels in
  the public set; ``unseen`` ones never do (not even as synonyms) and are reachable only through elite
  captions and the text corpus.
* **Modalities** (CFP, FFA, OCT): each condition lists the modalities the world renders it in.

Condition names use the label spellings of the real dataframes (``age related macular degeneration``,
``pathologic myopia``, ...) so that evaluation code written for the demo works unchanged on real data.
Every name, definition and phrase here is written for fundus-vlp.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..data.config import MODALITIES as IMAGING_MODALITIES

__all__ = [
    "MODALITIES",
    "Finding",
    "FindingSpec",
    "Condition",
    "FINDINGS",
    "CONDITIONS",
    "SEEN_CONDITIONS",
    "UNSEEN_CONDITIONS",
    "conditions_for_modality",
]

MODALITIES: tuple[str, ...] = IMAGING_MODALITIES


@dataclass(frozen=True)
class Finding:
    """A visual primitive.

    Attributes:
        key: identifier used by the renderers and the caption templates.
        label: the category string a lesion-level dataset would use for it.
        location: coarse anatomical location (``disc``, ``macula``, ``posterior pole``, ``periphery``, ``diffuse``).
        modalities: modalities in which the finding is drawn (and may be described).
        summary: one plain-English sentence fragment that defines the finding (used by the corpus).
    """

    key: str
    label: str
    location: str
    modalities: tuple[str, ...]
    summary: str


@dataclass(frozen=True)
class FindingSpec:
    """How a condition uses a finding: drawn with probability ``prob``, severity uniform in ``severity``."""

    finding: str
    prob: float = 1.0
    severity: tuple[float, float] = (0.5, 1.0)


@dataclass(frozen=True)
class Condition:
    """A named combination of findings.

    Attributes:
        name: label string (real-world spelling).
        seen: whether the condition may appear as a categorical label in the public set.
        findings: the findings that make up its visual signature.
        modalities: modalities the world renders this condition in.
        synonyms: alternative names (used by captions and ban-list matching; mirrored in the knowledge base).
        definition: one-sentence definition (corpus).
        differentials: names of conditions it is commonly confused with (corpus).
    """

    name: str
    seen: bool
    findings: tuple[FindingSpec, ...]
    modalities: tuple[str, ...]
    synonyms: tuple[str, ...] = ()
    definition: str = ""
    differentials: tuple[str, ...] = field(default_factory=tuple)

    @property
    def finding_keys(self) -> tuple[str, ...]:
        return tuple(f.finding for f in self.findings)


_CFP, _FFA, _OCT = "CFP", "FFA", "OCT"

FINDINGS: dict[str, Finding] = {
    f.key: f
    for f in (
        Finding("cup", "increased cup disc ratio", "disc", (_CFP,),
                "an enlarged pale optic cup that leaves only a thin neuroretinal rim"),
        Finding("peripapillary_atrophy", "peripapillary atrophy", "disc", (_CFP, _FFA),
                "a pale crescent of thinned retina and choroid beside the optic disc"),
        Finding("tilted_disc", "tilted disc", "disc", (_CFP,),
                "an oval, obliquely inserted optic disc"),
        Finding("disc_pallor", "optic disc pallor", "disc", (_CFP,),
                "a waxy, pale yellow optic disc"),
        Finding("microaneurysms", "microaneurysms", "posterior pole", (_CFP, _FFA),
                "tiny round red dots from outpouchings of the capillary walls"),
        Finding("haemorrhages", "haemorrhages", "posterior pole", (_CFP, _FFA),
                "dark red dot and blot bleeds within the retina"),
        Finding("flame_haemorrhages", "flame haemorrhages", "disc", (_CFP, _FFA),
                "elongated, feathery red bleeds in the nerve fibre layer close to the disc"),
        Finding("hard_exudates", "hard exudates", "macula", (_CFP, _OCT),
                "bright yellow, sharply outlined lipid deposits, often in clusters or rings"),
        Finding("cotton_wool_spots", "cotton wool spots", "posterior pole", (_CFP, _FFA),
                "fluffy white patches with soft edges from swollen nerve fibres"),
        Finding("venous_beading", "venous beading", "diffuse", (_CFP, _FFA),
                "veins whose calibre swells and narrows like a string of beads"),
        Finding("non_perfusion", "capillary non perfusion", "periphery", (_FFA,),
                "dark areas where the capillaries no longer fill with dye"),
        Finding("macular_edema", "macular edema", "macula", (_FFA, _OCT),
                "fluid that thickens the central retina and leaks dye on angiography"),
        Finding("drusen", "drusen", "macula", (_CFP, _FFA, _OCT),
                "round yellow deposits beneath the retina, clustered around the fovea"),
        Finding("pigment_clumps", "pigment clumps", "macula", (_CFP, _FFA),
                "small dark clumps of pigment near the fovea"),
        Finding("macular_atrophy", "macular atrophy", "macula", (_CFP, _FFA, _OCT),
                "sharply outlined pale patches where retina and choroid have thinned"),
        Finding("tessellation", "tessellation", "diffuse", (_CFP,),
                "a striped, tigroid background in which the large choroidal vessels show through"),
        Finding("staphyloma", "posterior staphyloma", "macula", (_OCT,),
                "a steep backward bulge of the posterior eye wall with a thin choroid"),
        Finding("bone_spicules", "bone spicule pigmentation", "periphery", (_CFP, _FFA),
                "dark, spidery pigment clumps scattered in the mid-periphery"),
        Finding("outer_retinal_loss", "ellipsoid zone loss", "periphery", (_OCT,),
                "loss of the photoreceptor bands outside the central fovea"),
        Finding("arteriolar_narrowing", "arteriolar narrowing", "diffuse", (_CFP, _FFA),
                "thin, thread-like retinal arteries"),
        Finding("vessel_tortuosity", "vessel tortuosity", "diffuse", (_CFP, _FFA),
                "wavy, corkscrew retinal vessels"),
        Finding("foveal_defect", "full thickness foveal defect", "macula", (_CFP, _FFA, _OCT),
                "a round, punched-out defect of the whole retinal thickness at the fovea"),
        Finding("lens_haze", "media haze", "diffuse", (_CFP,),
                "a diffuse veil that blurs the whole fundus view"),
    )
}


F = FindingSpec
CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in (
        # ---- seen: may appear as categorical labels in the public set
        Condition("normal", True, (), (_CFP, _FFA, _OCT), ("healthy fundus", "normal fundus"),
           "a healthy eye with a pink disc and small cup, a dark macula and vessels of normal calibre",
           ("mild diabetic retinopathy",)),
        Condition("glaucoma", True,
           (F("cup", 1.0, (0.45, 1.0)), F("peripapillary_atrophy", 0.3, (0.0, 0.35))),
           (_CFP,), ("glaucomatous optic neuropathy", "glaucomatous cupping"),
           "a chronic optic neuropathy in which nerve fibres are lost and the optic cup enlarges",
           ("pathologic myopia", "normal")),
        Condition("mild diabetic retinopathy", True,
           (F("microaneurysms", 1.0, (0.0, 0.35)),),
           (_CFP, _FFA), ("mild non proliferative diabetic retinopathy", "mild npdr"),
           "the earliest stage of diabetic retinopathy, in which microaneurysms are the only sign",
           ("normal", "moderate diabetic retinopathy")),
        Condition("moderate diabetic retinopathy", True,
           (F("microaneurysms", 1.0, (0.4, 0.8)), F("haemorrhages", 1.0, (0.1, 0.45)),
            F("hard_exudates", 0.85, (0.2, 0.8)), F("cotton_wool_spots", 0.25, (0.0, 0.4)),
            F("macular_edema", 1.0, (0.2, 0.6))),
           (_CFP, _FFA, _OCT), ("moderate non proliferative diabetic retinopathy", "moderate npdr"),
           "a stage of diabetic retinopathy with more than microaneurysms but short of the severe stage",
           ("mild diabetic retinopathy", "severe diabetic retinopathy", "hypertensive retinopathy")),
        Condition("severe diabetic retinopathy", True,
           (F("microaneurysms", 1.0, (0.6, 1.0)), F("haemorrhages", 1.0, (0.6, 1.0)),
            F("cotton_wool_spots", 1.0, (0.4, 1.0)), F("venous_beading", 0.8, (0.4, 1.0)),
            F("hard_exudates", 0.5, (0.3, 1.0)), F("non_perfusion", 1.0, (0.4, 1.0)),
            F("macular_edema", 1.0, (0.5, 1.0))),
           (_CFP, _FFA, _OCT), ("severe non proliferative diabetic retinopathy", "severe npdr"),
           "an advanced non-proliferative stage of diabetic retinopathy with widespread retinal ischaemia",
           ("moderate diabetic retinopathy", "hypertensive retinopathy")),
        Condition("age related macular degeneration", True,
           (F("drusen", 1.0, (0.35, 1.0)), F("pigment_clumps", 0.6, (0.2, 1.0)),
            F("macular_atrophy", 0.2, (0.0, 0.4))),
           (_CFP, _FFA, _OCT), ("age related maculopathy", "senile macular degeneration"),
           "a degeneration of the central retina in older adults that begins with deposits under the retina",
           ("pathologic myopia", "macular hole")),
        Condition("hypertensive retinopathy", True,
           (F("arteriolar_narrowing", 1.0, (0.5, 1.0)), F("vessel_tortuosity", 1.0, (0.4, 1.0)),
            F("flame_haemorrhages", 0.85, (0.2, 0.9)), F("cotton_wool_spots", 0.7, (0.1, 0.6))),
           (_CFP, _FFA), ("hypertensive fundus changes",),
           "retinal damage caused by high blood pressure, seen first in the small arteries",
           ("moderate diabetic retinopathy", "retinitis pigmentosa")),
        # ---- unseen: never a public label; only elite captions, the corpus and evaluation
        Condition("pathologic myopia", False,
           (F("tessellation", 1.0, (0.5, 1.0)), F("peripapillary_atrophy", 1.0, (0.5, 1.0)),
            F("tilted_disc", 0.7, (0.3, 1.0)), F("macular_atrophy", 0.6, (0.2, 1.0)),
            F("staphyloma", 1.0, (0.4, 1.0))),
           (_CFP, _FFA, _OCT), ("pathological myopia", "myopic maculopathy", "high myopia", "myopic degeneration"),
           "a degenerative disease of very long, highly short-sighted eyes that stretches and thins the retina",
           ("glaucoma", "age related macular degeneration")),
        Condition("cataract", False,
           (F("lens_haze", 1.0, (0.5, 1.0)),),
           (_CFP,), ("lens opacity", "cataractous lens"),
           "a clouding of the crystalline lens that veils and blurs the view of the retina",
           ("normal",)),
        Condition("macular hole", False,
           (F("foveal_defect", 1.0, (0.3, 1.0)),),
           (_CFP, _FFA, _OCT), ("full thickness macular hole", "foveal hole"),
           "a round opening through the full thickness of the retina at the centre of the macula",
           ("age related macular degeneration", "moderate diabetic retinopathy")),
        Condition("retinitis pigmentosa", False,
           (F("bone_spicules", 1.0, (0.4, 1.0)), F("arteriolar_narrowing", 1.0, (0.6, 1.0)),
            F("disc_pallor", 1.0, (0.4, 1.0)), F("outer_retinal_loss", 1.0, (0.5, 1.0))),
           (_CFP, _FFA, _OCT), ("rod cone dystrophy", "pigmentary retinopathy"),
           "an inherited degeneration of the rod and cone photoreceptors that starts in the periphery",
           ("hypertensive retinopathy", "pathologic myopia")),
    )
}
del F

SEEN_CONDITIONS: list[str] = [n for n, c in CONDITIONS.items() if c.seen]
UNSEEN_CONDITIONS: list[str] = [n for n, c in CONDITIONS.items() if not c.seen]


def conditions_for_modality(modality: str, *, seen: bool | None = None) -> list[str]:
    """Condition names rendered in ``modality`` (optionally only seen or only unseen ones), in ontology order."""
    return [n for n, c in CONDITIONS.items() if modality in c.modalities and (seen is None or c.seen == seen)]


def _check() -> None:
    # Cheap import-time consistency check: every referenced finding and differential exists.
    for c in CONDITIONS.values():
        for spec in c.findings:
            assert spec.finding in FINDINGS, (c.name, spec.finding)
        for d in c.differentials:
            assert d in CONDITIONS, (c.name, d)
        assert set(c.modalities) <= set(MODALITIES)


_check()
