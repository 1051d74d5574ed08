"""Image-text retrieval (recall@k both ways) and, for models with a decoder, captioning metrics."""
from __future__ import annotations

from typing import Dict, List

from ..context import EvalContext, plain_row


def run_retrieval(ctx: EvalContext) -> List[Dict]:
    from ...data.dataframes import read_captions, resolve_image_path
    from ..experiments import check_images_exist
    from ..recall import recall_at_k
    from ...inference.embedding import encode_texts

    rc, exp = ctx.cfg.retrieval, ctx.experiment
    csv = rc.captions or exp.captions
    root = rc.image_root or exp.captions_root or exp.image_root
    if not csv or not root:
        raise ValueError(f"retrieval needs a caption CSV and its image root: set retrieval.captions=FILE and "
                         f"retrieval.image_root=DIR (experiment {exp.name} defines none)")
    frame = read_captions(csv)
    uniq = list(dict.fromkeys(frame["image"]))
    index = {p: i for i, p in enumerate(uniq)}
    first_row = {p: int(r) for p, r in zip(frame["image"][::-1], frame["row"][::-1])}
    paths = [resolve_image_path(root, p, csv, first_row[p]) for p in uniq]
    where = [f"{csv}, row {first_row[p]}" for p in uniq]
    check_images_exist(paths, where, root)
    img = ctx.cache.get(ctx.model, paths, where, tag=f"{exp.name}-captions", fingerprint=ctx.fingerprint,
                        project=True, batch_size=ctx.cfg.batch_size, device=str(ctx.device),
                        num_workers=ctx.cfg.num_workers, progress=ctx.cfg.progress)
    txt = encode_texts(ctx.model, list(frame["caption"]), device=ctx.device)
    metrics = recall_at_k(img, txt, [index[p] for p in frame["image"]], rc.ks)
    rows = [plain_row(ctx, "retrieval", "recall@k", metrics, n_test=len(frame))]
    if rc.captioning and getattr(ctx.model, "decoder", None) is not None:
        refs: Dict[str, List[str]] = {}
        for p, c in zip(frame["image"], frame["caption"]):
            refs.setdefault(p, []).append(c)
        rows.append(plain_row(ctx, "retrieval", "captioning", caption_scores(ctx, uniq, paths, where, refs),
                               n_test=len(uniq)))
    elif rc.captioning:
        ctx.note("captioning metrics skipped: the model has no caption decoder")
    return rows


def caption_scores(ctx: EvalContext, ids: List[str], paths, where, refs: Dict[str, List[str]]) -> Dict:
    from ..captioning import caption_metrics
    from ...inference.inputs import eval_loader

    rc, model = ctx.cfg.retrieval, ctx.model
    loader = eval_loader(model.cfg.preprocess, paths, where, ctx.cfg.batch_size, ctx.cfg.num_workers)
    generated: List[str] = []
    model.eval()
    for images in loader:
        ids_out = model.generate(images.to(ctx.device), max_length=rc.max_length, num_beams=rc.num_beams)
        generated += model.tokenizer.batch_decode(ids_out.cpu())
    scores = caption_metrics({i: refs[i] for i in ids}, dict(zip(ids, generated)))
    if scores.get("notes"):
        ctx.note(str(scores["notes"]))
    scores["examples"] = [{"image": i, "generated": g, "reference": refs[i][0]} for i, g in zip(ids[:5], generated)]
    return scores
