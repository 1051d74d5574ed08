"""Chinese captions and corpus for the demo world (all text written for fundus-vlp).

The Chinese side of :mod:`.text`: :func:`make_caption_zh` describes the same case (the same conditions,
finding counts, sizes and cup-to-disc ratio) in Chinese, with several sentence structures, Chinese synonyms
and a shuffled finding order; :func:`make_corpus_zh` writes Chinese paragraphs with the same sections as the
English corpus. They only run for a bilingual world (``DemoWorldCfg.chinese``), each from its own random
stream, so an English-only world is unchanged.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .ontology import CONDITIONS, FINDINGS, MODALITIES
from .scene import Case, sample_case
from .text import CORPUS_SECTIONS, PHRASES, fitted_report

__all__ = ["make_caption_zh", "make_corpus_zh", "make_report_zh", "CONDITION_NAMES_ZH", "FINDING_NAMES_ZH"]

Phrase = Callable[[dict, Case, np.random.Generator], str]

# Condition -> (Chinese name, Chinese synonyms); the names are those of the packaged fundus_zh knowledge base.
CONDITION_NAMES_ZH: dict[str, tuple[str, tuple[str, ...]]] = {
    "normal": ("正常眼底", ("健康眼底", "未见异常")),
    "glaucoma": ("青光眼", ("青光眼性视神经病变", "青光眼性视杯凹陷")),
    "mild diabetic retinopathy": ("轻度糖尿病视网膜病变", ("轻度非增殖性糖尿病视网膜病变", "轻度糖网")),
    "moderate diabetic retinopathy": ("中度糖尿病视网膜病变", ("中度非增殖性糖尿病视网膜病变", "中度糖网")),
    "severe diabetic retinopathy": ("重度糖尿病视网膜病变", ("重度非增殖性糖尿病视网膜病变", "重度糖网")),
    "age related macular degeneration": ("年龄相关性黄斑变性", ("老年性黄斑变性", "黄斑变性")),
    "hypertensive retinopathy": ("高血压性视网膜病变", ("高血压眼底改变",)),
    "pathologic myopia": ("病理性近视", ("高度近视", "近视性黄斑病变", "变性近视")),
    "cataract": ("白内障", ("晶状体混浊",)),
    "macular hole": ("黄斑裂孔", ("全层黄斑裂孔", "中心凹裂孔")),
    "retinitis pigmentosa": ("视网膜色素变性", ("视杆视锥细胞营养不良", "色素性视网膜炎")),
}

# Finding -> (Chinese label, Chinese one-line summary), for the corpus.
FINDING_NAMES_ZH: dict[str, tuple[str, str]] = {
    "cup": ("杯盘比增大", "视杯扩大苍白，只剩一圈很薄的盘沿"),
    "peripapillary_atrophy": ("视盘旁萎缩", "视盘旁视网膜和脉络膜变薄形成的苍白萎缩弧"),
    "tilted_disc": ("视盘倾斜", "视盘呈椭圆形并斜行插入"),
    "disc_pallor": ("视盘苍白", "视盘呈蜡黄色苍白"),
    "microaneurysms": ("微动脉瘤", "毛细血管壁膨出形成的针尖样小红点"),
    "haemorrhages": ("出血", "视网膜内暗红色的点状和斑状出血"),
    "flame_haemorrhages": ("火焰状出血", "神经纤维层内沿血管分布的羽毛状出血"),
    "hard_exudates": ("硬性渗出", "渗漏血管留下的黄色蜡样脂质沉积"),
    "cotton_wool_spots": ("棉絮斑", "神经纤维层缺血形成的白色软性斑片"),
    "venous_beading": ("静脉串珠样改变", "静脉节段性扩张和狭窄"),
    "non_perfusion": ("毛细血管无灌注区", "造影中毛细血管闭塞形成的暗区"),
    "macular_edema": ("黄斑水肿", "黄斑区液体积聚导致视网膜增厚"),
    "drusen": ("玻璃膜疣", "视网膜色素上皮下的黄白色沉积物"),
    "pigment_clumps": ("色素团块", "黄斑区的小块深色色素"),
    "macular_atrophy": ("黄斑萎缩", "边界清晰的苍白萎缩斑"),
    "tessellation": ("豹纹状眼底", "视网膜变薄后透见脉络膜大血管"),
    "staphyloma": ("后巩膜葡萄肿", "后极部眼球壁向后膨出"),
    "bone_spicules": ("骨细胞样色素沉着", "中周部黑色骨细胞样色素团块"),
    "outer_retinal_loss": ("椭圆体带缺失", "中心凹以外的光感受器层丢失"),
    "arteriolar_narrowing": ("动脉变细", "视网膜小动脉变窄呈线状"),
    "vessel_tortuosity": ("血管迂曲", "视网膜血管弯曲呈波浪状"),
    "foveal_defect": ("中心凹全层缺损", "黄斑中心的圆形全层缺损"),
    "lens_haze": ("屈光介质混浊", "混浊的晶状体使整个眼底模糊"),
}

_MODALITY_ZH = {"CFP": "彩色眼底照相", "FFA": "荧光素眼底血管造影", "OCT": "OCT"}


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _few(n: int) -> str:
    return "少量" if n <= 4 else "数个" if n <= 9 else "多个" if n <= 15 else "大量"


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return "、".join(items[:-1]) + "及" + items[-1]


def _pole(rng: np.random.Generator) -> str:
    return _pick(rng, ["后极部", "黄斑周围", "血管弓之间", "中心凹颞侧", "中心凹附近"])


def _haem_loc(p: dict, rng: np.random.Generator) -> str:
    return "四个象限" if p["severity"] >= 0.6 else _pole(rng)


# ------------------------------------------------------------------------------------------ finding phrases
# Each entry: finding key -> phrase makers returning a Chinese noun phrase without final punctuation.
_CFP: dict[str, list[Phrase]] = {
    "microaneurysms": [
        lambda p, c, r: f"{_pole(r)}{_few(p['count'])}针尖样小红点（微动脉瘤）",
        lambda p, c, r: f"{_pole(r)}{_few(p['count'])}微动脉瘤",
        lambda p, c, r: f"{_pole(r)}{p['count']}个微动脉瘤",
    ],
    "haemorrhages": [
        lambda p, c, r: f"{_haem_loc(p, r)}{_few(p['count'])}暗红色点状和斑状出血",
        lambda p, c, r: f"{_haem_loc(p, r)}{'大片' if p['severity'] > 0.6 else '中等大小的'}圆形视网膜出血",
        lambda p, c, r: f"{_haem_loc(p, r)}{_few(p['count'])}视网膜内出血",
    ],
    "flame_haemorrhages": [
        lambda p, c, r: "视盘旁沿血管分布的火焰状出血",
        lambda p, c, r: f"视盘边缘{_few(p['count'])}线状出血",
    ],
    "hard_exudates": [
        lambda p, c, r: "中心凹附近环形排列的黄色蜡样渗出" if p["ring"] else "黄斑附近成簇的亮黄色硬性渗出",
        lambda p, c, r: "中心凹旁边界清晰的黄色脂质渗出",
        lambda p, c, r: f"黄斑区{'一簇' if p['clusters'] == 1 else str(p['clusters']) + '簇'}细小的亮黄色硬性渗出",
    ],
    "cotton_wool_spots": [
        lambda p, c, r: f"血管弓旁{_few(p['count'])}白色绒毛样棉絮斑",
        lambda p, c, r: f"血管附近{_few(p['count'])}边缘呈羽毛状的白色软性斑片",
    ],
    "venous_beading": [lambda p, c, r: "静脉串珠样改变", lambda p, c, r: "主干静脉粗细不均，呈串珠状"],
    "drusen": [
        lambda p, c, r: f"中心凹周围{_few(p['count'])}{'大的软性' if p['large'] else '细小的'}黄色玻璃膜疣",
        lambda p, c, r: "黄斑区多个圆形黄白色沉积物",
        lambda p, c, r: f"黄斑区散在{_few(p['count'])}玻璃膜疣",
    ],
    "pigment_clumps": [lambda p, c, r: "黄斑区小块深色色素团块", lambda p, c, r: "中心凹附近局灶性色素沉着"],
    "macular_atrophy": [
        lambda p, c, r: f"中心凹附近{'一处' if p['count'] == 1 else '多处'}边界清晰的苍白萎缩斑",
        lambda p, c, r: "后极部斑片状黄白色脉络膜视网膜萎缩",
    ],
    "tessellation": [
        lambda p, c, r: "豹纹状眼底，透见脉络膜大血管",
        lambda p, c, r: "眼底背景呈弥漫性豹纹状",
    ],
    "peripapillary_atrophy": [
        lambda p, c, r: "视盘旁小的萎缩弧" if p["severity"] < 0.45 else "视盘颞侧宽大的苍白萎缩弧",
        lambda p, c, r: "视盘旁窄的苍白萎缩带" if p["severity"] < 0.45 else "视盘旁宽大的白色新月形萎缩区",
    ],
    "tilted_disc": [lambda p, c, r: "视盘倾斜呈椭圆形", lambda p, c, r: "视盘斜行插入"],
    "disc_pallor": [lambda p, c, r: "视盘呈蜡黄色苍白", lambda p, c, r: "视盘颜色蜡黄"],
    "cup": [
        lambda p, c, r: f"视杯扩大，杯盘比约{c.disc['cdr']:.1f}",
        lambda p, c, r: "视杯大而苍白，盘沿变窄",
        lambda p, c, r: f"视盘明显凹陷（杯盘比{c.disc['cdr']:.1f}）",
    ],
    "bone_spicules": [
        lambda p, c, r: "中周部黑色骨细胞样色素沉着",
        lambda p, c, r: f"周边部散在{_few(p['count'])}蜘蛛状黑色色素团块",
    ],
    "arteriolar_narrowing": [
        lambda p, c, r: "视网膜动脉变细",
        lambda p, c, r: "动脉呈细线状",
        lambda p, c, r: "视网膜小动脉普遍狭窄",
    ],
    "vessel_tortuosity": [lambda p, c, r: "视网膜血管迂曲呈波浪状", lambda p, c, r: "血管螺旋状迂曲"],
    "foveal_defect": [
        lambda p, c, r: (f"中心凹处约{'1/2' if p['severity'] > 0.6 else '1/3'}视盘直径大小的圆形边界清晰的红色缺损，"
                         "周围有灰色晕环"),
        lambda p, c, r: "中心凹处圆形全层缺损",
        lambda p, c, r: "黄斑中心凿孔样红点，周围有苍白晕环",
    ],
    "lens_haze": [
        lambda p, c, r: "整个眼底朦胧模糊",
        lambda p, c, r: "眼底如蒙薄纱，血管和视盘边界看不清",
        lambda p, c, r: "透过混浊的晶状体细节不清，血管隐约可见",
    ],
}

_FFA: dict[str, list[Phrase]] = {
    "microaneurysms": [lambda p, c, r: f"{_few(p['count'])}微动脉瘤形成的点状强荧光",
                       lambda p, c, r: "后极部散在亮点状微动脉瘤"],
    "haemorrhages": [lambda p, c, r: "出血遮蔽荧光形成的暗斑",
                     lambda p, c, r: f"{_few(p['count'])}出血所致的片状弱荧光"],
    "flame_haemorrhages": [lambda p, c, r: "视盘旁火焰状遮蔽荧光"],
    "cotton_wool_spots": [lambda p, c, r: "棉絮斑处小片毛细血管无灌注", lambda p, c, r: "血管弓旁局灶性弱荧光"],
    "venous_beading": [lambda p, c, r: "静脉串珠样改变"],
    "non_perfusion": [lambda p, c, r: "中周部大片毛细血管无灌注区", lambda p, c, r: "广泛毛细血管脱失，血管截断"],
    "macular_edema": [lambda p, c, r: "黄斑区晚期弥漫性荧光渗漏", lambda p, c, r: "黄斑水肿所致花瓣状强荧光"],
    "drusen": [lambda p, c, r: "黄斑区玻璃膜疣着染形成的小圆形强荧光"],
    "pigment_clumps": [lambda p, c, r: "色素团块遮蔽荧光"],
    "macular_atrophy": [lambda p, c, r: "斑片状萎缩区的透见荧光"],
    "peripapillary_atrophy": [lambda p, c, r: "视盘旁新月形透见荧光"],
    "bone_spicules": [lambda p, c, r: "中周部斑驳状强荧光夹杂骨细胞样色素遮蔽荧光"],
    "arteriolar_narrowing": [lambda p, c, r: "动脉细窄呈线状"],
    "vessel_tortuosity": [lambda p, c, r: "血管迂曲"],
    "foveal_defect": [lambda p, c, r: "中心凹处圆形透见荧光", lambda p, c, r: "中心凹中央小圆形强荧光"],
}

_OCT: dict[str, list[Phrase]] = {
    "macular_edema": [
        lambda p, c, r: f"中心凹周围内层视网膜{'少量' if p['severity'] < 0.5 else '多个'}囊样液腔",
        lambda p, c, r: "视网膜内囊腔伴黄斑中心增厚",
    ],
    "hard_exudates": [lambda p, c, r: "外丛状层点状高反射"],
    "drusen": [lambda p, c, r: f"{_few(max(3, p['count'] // 5))}视网膜色素上皮穹顶状隆起",
               lambda p, c, r: "色素上皮下沉积物使色素上皮呈波浪状"],
    "macular_atrophy": [lambda p, c, r: "一段色素上皮缺失，脉络膜信号增强"],
    "staphyloma": [lambda p, c, r: "后极部眼球壁陡峭弯曲，脉络膜变薄", lambda p, c, r: "后巩膜葡萄肿伴视网膜和脉络膜变薄"],
    "outer_retinal_loss": [lambda p, c, r: "中心凹以外椭圆体带缺失", lambda p, c, r: "外核层变薄，光感受器带仅在中心保留"],
    "foveal_defect": [lambda p, c, r: "中心凹处神经上皮全层缺损，边缘呈囊样",
                      lambda p, c, r: "中心凹处贯穿视网膜全层的圆孔，下方色素上皮完整"],
}

PHRASES_ZH: dict[str, dict[str, list[Phrase]]] = {"CFP": _CFP, "FFA": _FFA, "OCT": _OCT}

_NORMAL = {
    "CFP": ["视盘淡红色，视杯小", "黄斑颜色较暗，可见中心凹反光", "视网膜血管管径正常", "无出血、渗出或玻璃膜疣"],
    "FFA": ["视网膜血管充盈正常", "中心凹无血管区圆而暗", "无渗漏或无灌注"],
    "OCT": ["中心凹形态正常", "视网膜各层结构清晰", "色素上皮带光滑连续"],
}
_OPENERS = {
    "CFP": ["{eye}彩色眼底照相", "{eye}眼底照片", "{eye}后极部彩色眼底像"],
    "FFA": ["{eye}荧光素眼底血管造影", "{eye}静脉期造影图像", "{eye}造影中期图像"],
    "OCT": ["{eye}经中心凹水平OCT扫描", "{eye}黄斑OCT", "{eye}黄斑区OCT断层图像"],
}
_EYE = {"right": "右眼", "left": "左眼"}


def condition_phrase_zh(name: str, rng: np.random.Generator, synonym_p: float = 0.2) -> str:
    """The Chinese words naming a condition: usually its name, sometimes a synonym."""
    zh, syn = CONDITION_NAMES_ZH[name]
    return _pick(rng, list(syn)) if syn and rng.random() < synonym_p else zh


def finding_phrases_zh(case: Case, rng: np.random.Generator) -> list[str]:
    """Chinese noun phrases for every finding of ``case`` that its modality shows (shuffled)."""
    bank = PHRASES_ZH[case.modality]
    out = [_pick(rng, bank[k])(p, case, rng) for k, p in case.findings.items() if k in bank]
    return [out[i] for i in rng.permutation(len(out))]


def make_caption_zh(case: Case, rng: np.random.Generator) -> str:
    """A Chinese expert-style caption for ``case`` that names the condition and describes its findings."""
    name = _join([condition_phrase_zh(n, rng) for n in case.conditions])
    normal = _NORMAL[case.modality]
    ph = finding_phrases_zh(case, rng) or [normal[i] for i in rng.permutation(len(normal))]
    opener = _pick(rng, _OPENERS[case.modality]).format(eye=_EYE.get(case.eye, ""))
    link = _pick(rng, ["符合", "考虑", "提示"])
    structure = int(rng.integers(4))
    if structure == 0:
        return f"{opener}示{'，'.join(ph)}，{link}{name}。"
    if structure == 1:
        return f"{opener}。可见{'；'.join(ph)}。诊断：{name}。"
    if structure == 2:
        return f"{name}：{opener}显示{_join(ph)}。"
    return f"{'，'.join(ph)}。{opener}，{link}{name}。"


_REPORT_LEADS_ZH = ("{eye}：{p}。", "{eye}造影示{p}。", "{eye}荧光素眼底血管造影可见{p}。")


def make_report_zh(eyes: list[Case], rng: np.random.Generator, max_chars: int = 80) -> str:
    """The Chinese case-level FFA report of ``eyes`` (the side of :func:`.text.make_report`): one sentence
    per imaged eye listing its findings, then the diagnosis of each eye. Findings are dropped from the
    longest list until the report fits ``max_chars`` characters (one decoder token each); every eye keeps one."""
    phrases = [finding_phrases_zh(case, rng) or [_pick(rng, _NORMAL["FFA"])] for case in eyes]
    leads = [_pick(rng, _REPORT_LEADS_ZH) for _ in eyes]
    names = {c.eye: _join([condition_phrase_zh(n, rng, synonym_p=0.0) for n in c.conditions]) for c in eyes}
    if len(eyes) == 2 and len(set(names.values())) == 1:
        impression = f"双眼{names[eyes[0].eye]}"
    else:
        impression = "；".join(f"{_EYE[c.eye]}{names[c.eye]}" for c in eyes)
    closing = f"{_pick(rng, ['诊断：', '印象：', '结论：'])}{impression}。"

    def render(phrases: list[list[str]]) -> str:
        parts = [lead.format(eye=_EYE[c.eye], p="，".join(ph)) for lead, c, ph in zip(leads, eyes, phrases)]
        return "".join(parts + [closing])

    return fitted_report(phrases, render, lambda text: len(text) <= max_chars)


# ---------------------------------------------------------------------------------------------------- corpus
_DEFINITIONS = {
    "normal": "眼睛健康，视盘淡红、视杯小，黄斑颜色较暗，血管管径正常",
    "glaucoma": "一种慢性视神经病变，神经纤维逐渐丢失，视杯扩大",
    "mild diabetic retinopathy": "糖尿病视网膜病变的最早阶段，微动脉瘤是唯一的体征",
    "moderate diabetic retinopathy": "比轻度更重、但未达到重度的糖尿病视网膜病变",
    "severe diabetic retinopathy": "伴广泛视网膜缺血的晚期非增殖性糖尿病视网膜病变",
    "age related macular degeneration": "老年人中心视网膜的变性，始于视网膜下的沉积物",
    "hypertensive retinopathy": "高血压引起的视网膜损害，最先累及小动脉",
    "pathologic myopia": "眼轴很长的高度近视眼的退行性疾病，视网膜被拉伸变薄",
    "cataract": "晶状体混浊，使眼底视野朦胧模糊",
    "macular hole": "黄斑中心视网膜全层的圆形裂孔",
    "retinitis pigmentosa": "始于周边部的遗传性视杆和视锥光感受器变性",
}
_CLINICAL = {
    "normal": "正常眼睛视盘淡红、视杯小，黄斑较暗，血管规则，无病变。",
    "glaucoma": "患者早期往往没有症状，周边视野缓慢无痛地丢失；眼压升高常见但并非必需。",
    "mild diabetic retinopathy": "这一阶段视力通常不受影响，因此糖尿病患者需要每年筛查。",
    "moderate diabetic retinopathy": "黄斑积液时视力可能模糊，需要更密切的随访。",
    "severe diabetic retinopathy": "一年内进展为新生血管的风险很高，常需考虑激光或注射治疗。",
    "age related macular degeneration": "患者中心视力扭曲或模糊，周边视力保留。",
    "hypertensive retinopathy": "其严重程度与血压高低和病程相关，血压控制后可好转。",
    "pathologic myopia": "见于眼轴很长的眼睛，黄斑下新生血管可引起突然的中心视物变形。",
    "cataract": "患者视物逐渐模糊、畏光、颜色变淡；手术可置换混浊的晶状体。",
    "macular hole": "患者出现中心暗点和直线变弯；手术常可使裂孔闭合。",
    "retinitis pigmentosa": "首先出现夜盲，随后视野缓慢缩小。",
}
_MODALITY_LEAD = {"CFP": "在彩色眼底照片上", "FFA": "在荧光素眼底血管造影上", "OCT": "在OCT上"}


def _typical(name: str, modality: str, rng: np.random.Generator) -> list[str]:
    return finding_phrases_zh(sample_case(name, modality, rng), rng) or list(_NORMAL[modality])


def _definition(name: str, rng: np.random.Generator) -> str:
    zh, syn = CONDITION_NAMES_ZH[name]
    c = CONDITIONS[name]
    text = f"{zh}（又称{_join(list(syn))}）是{_DEFINITIONS[name]}。" if syn else f"{zh}是{_DEFINITIONS[name]}。"
    signs = [s.finding for s in c.findings if "CFP" in FINDINGS[s.finding].modalities]
    if signs:
        text += _pick(rng, ["眼底照片上可见", "彩色眼底照相的体征包括", "典型眼底体征有"])
        text += _join([f"{FINDING_NAMES_ZH[k][0]}（{FINDING_NAMES_ZH[k][1]}）" for k in signs]) + "。"
    elif c.findings:
        text += "其体征最好用OCT观察：" + _join([FINDING_NAMES_ZH[s.finding][0] for s in c.findings]) + "。"
    return text


def _modalities(name: str, rng: np.random.Generator) -> str:
    zh = CONDITION_NAMES_ZH[name][0]
    return "".join(f"{_MODALITY_LEAD[m]}，{zh}表现为{_join(_typical(name, m, rng))}。" for m in CONDITIONS[name].modalities)


def _differential(name: str, rng: np.random.Generator) -> str:
    c = CONDITIONS[name]
    other = _pick(rng, list(c.differentials))
    a, b = CONDITION_NAMES_ZH[name][0], CONDITION_NAMES_ZH[other][0]
    text = f"{a}需要与{b}鉴别。{a}表现为{_join(_typical(name, 'CFP', rng))}，而{b}表现为{_join(_typical(other, 'CFP', rng))}。"
    key = [k for k in c.finding_keys if k not in CONDITIONS[other].finding_keys]
    key = [k for k in key if "CFP" in FINDINGS[k].modalities] or key
    if key:
        text += f"关键的鉴别体征是{FINDING_NAMES_ZH[_pick(rng, key)][0]}。"
    return text


def _finding_note(key: str) -> str:
    f = FINDINGS[key]
    label, summary = FINDING_NAMES_ZH[key]
    where = [CONDITION_NAMES_ZH[n][0] for n, c in CONDITIONS.items() if key in c.finding_keys]
    mods = _join([_MODALITY_ZH[m] for m in f.modalities])
    text = f"{label}：{summary}。可在{mods}上看到"
    return text + (f"，见于{_join(where)}。" if where else "。")


def _clinical(name: str, rng: np.random.Generator) -> str:
    zh, syn = CONDITION_NAMES_ZH[name]
    lead = zh + (f"（{_pick(rng, list(syn))}）" if syn and name != "normal" else "")
    verb = _pick(rng, ["的特点是", "表现为", "可见"])
    return f"{lead}{verb}{_join(_typical(name, 'CFP', rng)[:3])}。{_CLINICAL[name]}"


def _grading(rng: np.random.Generator) -> str:
    return _pick(rng, [
        "糖尿病视网膜病变按病变分级。轻度只有微动脉瘤；中度另有点状和斑状出血、硬性渗出，有时有棉絮斑；"
        "重度在四个象限均有大量出血，伴静脉串珠样改变和棉絮斑。",
        "无糖尿病视网膜病变与轻度糖尿病视网膜病变的差别很小：黄斑附近几个针尖样小红点，即微动脉瘤。",
        "出血遍及四个象限或静脉呈串珠样时，病变为重度；造影可见大片毛细血管无灌注区和黄斑渗漏。",
        "硬性渗出是渗漏血管留下的黄色脂质沉积；中心凹周围的环形渗出提示黄斑水肿，OCT可见增厚视网膜内的囊样液腔。",
    ])


def make_corpus_zh(n_paragraphs: int, rng: np.random.Generator) -> dict[str, list[str]]:
    """``n_paragraphs`` Chinese paragraphs grouped by section, cycled like the English corpus."""
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
            text = _finding_note(keys[j % len(keys)])
        elif section == "grading":
            text = _grading(rng) if j % 2 == 0 else _clinical(name, rng)
        else:
            text = _clinical(name, rng)
        out[section].append(text)
    return {k: v for k, v in out.items() if v}


# Every condition, finding and modality has its Chinese text - checked at import.
assert set(CONDITION_NAMES_ZH) == set(CONDITIONS) == set(_DEFINITIONS) == set(_CLINICAL)
assert set(FINDING_NAMES_ZH) == set(FINDINGS)
assert all(m in PHRASES_ZH for m in MODALITIES)
assert all(set(PHRASES_ZH[m]) == set(PHRASES[m]) for m in MODALITIES)  # the same findings in both languages
