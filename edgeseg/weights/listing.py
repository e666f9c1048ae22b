"""``edgeseg weights list``: the catalog as a table, with what is known about families without entries."""

from __future__ import annotations

from edgeseg.weights.catalog import CATALOG, FAMILY_NOTES, WeightsEntry, entries_for


def _row(entry: WeightsEntry) -> str:
    size = f"{entry.training_size[0]}x{entry.training_size[1]}" if entry.training_size else "-"
    miou = f"{entry.miou:.1f}" if entry.miou is not None else "-"
    where = f"hf {entry.hf_repo}" if entry.hf_repo else entry.url or f"by hand: {entry.page}"
    return (
        f"{entry.model:<18} {entry.name:<11} {entry.kind:<12} {entry.classes or '-':<11} {entry.num_classes:>5} "
        f"{size:>9} {miou:>5}  {entry.verification:<36} {where}"
    )


def format_catalog(model: str | None = None, catalog: tuple[WeightsEntry, ...] = CATALOG) -> str:
    """The entries (of ``model``, or all) as a table, then the sources and the notes of families without entries."""
    entries = entries_for(model, catalog)
    header = (
        f"{'model':<18} {'--weights':<11} {'kind':<12} {'classes':<11} {'n':>5} {'trained at':>9} {'mIoU':>5}  "
        f"{'verified by':<36} where"
    )
    lines = [header, *(_row(e) for e in entries)] if entries else []
    families = sorted({(model or e.model).split("-", 1)[0] for e in (entries or catalog)} | set(FAMILY_NOTES))
    if model is not None:
        families = [model.split("-", 1)[0]]
    notes = [f"  {family}: {FAMILY_NOTES[family]}" for family in families if family in FAMILY_NOTES]
    if not entries:
        lines.append(f"no released weights are listed for {model}")
    if notes:
        lines += ["", "notes:", *notes]
    sources = sorted({e.source for e in entries})
    if sources:
        lines += ["", "sources:", *(f"  {s}" for s in sources)]
    lines += [
        "",
        "mIoU: published single-scale value (%), '-' where none was sourced. Downloads were never tested "
        "against the real hosts from edgeseg's build machines.",
    ]
    return "\n".join(lines)
