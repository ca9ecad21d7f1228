"""summary.md (tables laid out like the papers') and PNG plots of a run's summary and rows."""

from __future__ import annotations

from pathlib import Path

from samfast.eval.parity import RUN_PARITY
from samfast.eval.protocols import ITERATIVE
from samfast.eval.settings import SELECTIONS
from samfast.io import atomic_path, atomic_write_bytes


def _stat(entry: dict, digits: int = 3) -> str:
    if "mean" not in entry:
        return "–"
    return f"{entry['mean']:.{digits}f} ({entry['q1']:.{digits}f}–{entry['q3']:.{digits}f})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def render(summary: dict, weights_random: bool) -> str:
    config = summary["config"]
    settings = config["settings"]
    lines = ["# samfast evaluation report", ""]
    if weights_random:
        lines += ["**RANDOM WEIGHTS: these numbers say nothing about segmentation quality.**", ""]
    lines += [
        f"Model `{config['model']}` ({config['weights']}), backend `{config['backend']}`"
        + (f", compared with `{config['compare']}`" if config.get("compare") else "")
        + f"; target `{settings['target']}`, planes {', '.join(settings['planes'])}, "
        + ("full slices" if settings["crop_margin_mm"] is None else f"cropped to 3D extent + "
           f"{settings['crop_margin_mm']:g} mm")
        + f", normalisation `{settings['normalization']}`, min area {settings['min_area']} px, "
        f"seed {settings['seed']}.",
        "",
        "Choices (switches in brackets): Putz's next point is placed from the "
        f"{settings['follow']} mask (`--follow`); low-res logits fed back: {settings['feed_logits']} "
        f"(`--feed-logits`); boxes per {settings['box_per']} (`--box-per`); MedSAM jitter 0–"
        f"{settings['jitter_px']} px; Ren margin 0–{settings['margin_mm']:g} mm; NSD tolerance "
        f"{settings['tolerance_mm']:g} mm. Best IoU (mbIoU) is the best over a slice's steps; the "
        "previous-slice selection picks, at each step, the mask with the highest Dice to the "
        "neighbouring slice's final mask, walking out from the slice with the largest target.",
        "",
    ]  # fmt: skip
    cases = summary["cases"]
    lines += [f"Cases evaluated: {cases['evaluated']}; skipped: {len(cases['skipped'])}.", ""]
    if cases["skipped"]:
        lines += _table(["skipped case", "reason"], [[s["case"], s["reason"]] for s in cases["skipped"]])
    lines += ["## Best IoU per slice, mean (IQR)", ""]
    rows = []
    for protocol, planes in summary["protocols"].items():
        for plane, entry in planes.items():
            sel = entry["selections"]
            rho = entry.get("spearman_best_iou_vs_area")
            rows.append(
                [protocol, plane, str(entry["slices"])]
                + [_stat(sel[name]["iou"]) for name in SELECTIONS]
                + [_stat(sel["oracle"]["dice"]), _stat(sel["oracle"]["nsd"]), _stat(sel["oracle"]["hd95"], 1)]
                + [f"{rho['rho']:.3f}" if rho else "–"]
            )
    lines += _table(
        ["protocol", "plane", "slices", "oracle", "suggested", "previous-slice", "DSC", "NSD", "HD95 mm",
         "Spearman ρ (IoU~area)"],
        rows,
    )  # fmt: skip
    lines += _groups(summary)
    lines += _curves(summary)
    lines += _volume_table(summary)
    lines += _parity_table(summary)
    lines += _gate_table(summary)
    lines += _latency_lines(summary.get("latency", {}))
    lines += _executor_lines(summary.get("executor"))
    return "\n".join(lines) + "\n"


def _groups(summary: dict) -> list[str]:
    rows = []
    for protocol, planes in summary["protocols"].items():
        for plane, entry in planes.items():
            for group, values in {**entry["by_grade"], **entry["by_area"]}.items():
                rows.append(
                    [protocol, plane, group, str(values["oracle"]["n"])]
                    + [_stat(values[n]) for n in SELECTIONS]
                )
    if not rows:
        return []
    header = ["protocol", "plane", "group", "slices", "oracle", "suggested", "previous-slice"]
    return ["## Best IoU by grade and by target area", "", *_table(header, rows)]


def _curves(summary: dict) -> list[str]:
    out = []
    for protocol in ITERATIVE:
        for plane, entry in summary["protocols"].get(protocol, {}).items():
            curves = entry["curves"]
            steps = len(curves["oracle"])
            rows = [[str(k + 1)] + [f"{curves[n][k]:.3f}" for n in SELECTIONS] for k in range(steps)]
            out += [f"## {protocol} ({plane}): mean IoU after each prompt step", ""]
            out += _table(["step", "oracle", "suggested", "previous-slice"], rows)
            gap = entry.get("previous_slice_vs_oracle")
            if gap:
                out += [
                    "Previous-slice selection picked the oracle's mask on "
                    f"{100 * gap['same_mask_as_oracle']:.1f} % of steps (suggested: "
                    f"{100 * gap['same_mask_as_suggested']:.1f} %); mean IoU gap to the oracle "
                    f"{gap['mean_iou_gap']:.3f}.",
                    "",
                ]
    return out


def _volume_table(summary: dict) -> list[str]:
    rows = []
    for protocol, planes in summary["volumes"].items():
        for plane, selections in planes.items():
            for name, metrics in selections.items():
                rows.append(
                    [
                        protocol,
                        plane,
                        name,
                        _stat(metrics["dice"]),
                        _stat(metrics["nsd"]),
                        _stat(metrics["hd95"], 1),
                    ]
                )
    if not rows:
        return []
    header = ["protocol", "stack", "selection", "3D DSC", "3D NSD", "3D HD95 mm"]
    return [
        "## 3D metrics of stacked best masks (tri = majority vote of 3 planes)",
        "",
        *_table(header, rows),
    ]


def _parity_table(summary: dict) -> list[str]:
    key = RUN_PARITY.fraction_key
    rows = [
        [protocol, p["backend"], str(p["slices"]), f"{p['mean_iou']:.4f}", f"{p['mean_iou_compare']:.4f}",
         f"{p['delta_mean_iou']:.4f}", f"{p['min_mask_dice']:.4f}", f"{100 * p[key]:.1f}%"]
        for protocol, p in summary.get("parity", {}).items()
    ]  # fmt: skip
    if not rows:
        return []
    header = ["protocol", "vs", "slices", "mean IoU", "mean IoU (vs)", "Δ", "min mask Dice"]
    header.append(f"Dice ≥ {RUN_PARITY.mask_dice:g}")
    return ["## Parity: the same prompts on the compare backend", "", *_table(header, rows)]


def _gate_table(summary: dict) -> list[str]:
    gate = summary.get("precision_gate")
    if not gate:
        return []
    rows = [
        [protocol, str(v["slices"]), f"{v['mean_dice']:.4f}", f"{v['mean_dice_fp32']:.4f}",
         f"{v['delta_mean_dice']:+.4f}", f"{v['mean_best_iou']:.4f}", f"{v['mean_best_iou_fp32']:.4f}",
         f"{v['delta_mean_best_iou']:+.4f}", f"{v['agreement_dice']['mean']:.4f}",
         f"{v['agreement_dice']['p1']:.4f}", f"{100 * v['agreement_dice']['share_ge_0.95']:.1f}%",
         f"{100 * v['agreement_dice']['share_ge_0.99']:.1f}%", "pass" if v["passed"] else "**FAIL**"]
        for protocol, v in gate["protocols"].items()
        if v["slices"]
    ]  # fmt: skip
    limits = gate["gate"]
    precision = summary["config"].get("precision", "fp32")
    return [
        f"## Task accuracy gate: {precision} vs the fp32 reference (same slices and prompts)",
        "",
        f"Passes when, per protocol, mean DSC and mean best IoU against the ground truth each differ "
        f"from fp32 by at most {limits['max_delta_mean_dice']:g} / {limits['max_delta_mean_best_iou']:g}. "
        "Agreement: per-mask Dice with the fp32 mask (every mask of every step). "
        f"Verdict: **{'passed' if gate['passed'] else 'FAILED'}**.",
        "",
        *_table(
            ["protocol", "slices", "DSC", "DSC fp32", "Δ DSC", "best IoU", "best IoU fp32", "Δ IoU",
             "agreement mean", "agreement p1", "≥ 0.95", "≥ 0.99", "gate"],
            rows,
        ),
    ]  # fmt: skip


def _latency_lines(latency: dict) -> list[str]:
    if not latency.get("slices"):
        return []
    out = ["## Latency (this machine; compare ratios, not absolute times)", ""]
    out.append(f"- encoder: median {latency['encoder_ms_per_slice']['median']:.1f} ms/slice")
    if "encoder_speedup_vs_compare" in latency:
        out.append(f"- encoder {latency['encoder_speedup_vs_compare']:.2f}× faster than the compare backend")
    for protocol, ms in latency["decoder_ms_per_call"].items():
        out.append(f"- decoder, {protocol}: {ms:.1f} ms per call")
    out.append(
        f"- {latency['slices_per_s']:.2f} slices/s (model time); peak RSS {latency['peak_rss_mb']:.0f} MB"
    )
    if "wall_s" in latency:
        out.append(f"- wall time of the last invocation: {latency['wall_s']:.1f} s")
    return out + [""]


def _executor_lines(executor: dict | None) -> list[str]:
    if not executor or executor["kind"] != "ray":
        return ["Ran in a single process.", ""] if executor else []
    return [
        f"Ran on Ray {executor['ray']} ({executor['address']}): {executor['workers']} workers on "
        f"{executor['nodes']} of {executor['cluster_nodes']} nodes, {executor['cpus_per_worker']:g} CPU and "
        f"{executor['gpus_per_worker']:g} GPU each, {executor['worker_restarts']} cases redone after a "
        "worker died. Model time above is per worker; the rows do not depend on the executor.",
        "",
    ]


def write_report(out_dir: Path, summary: dict, rows: list[dict], weights_random: bool) -> list[Path]:
    """summary.md and the PNG plots, each written atomically; returns the paths written."""
    written = [out_dir / "summary.md"]
    atomic_write_bytes(written[0], render(summary, weights_random).encode())
    return written + plot(out_dir, summary, rows)


def plot(out_dir: Path, summary: dict, rows: list[dict]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    written = []
    curves = [
        (p, plane, e["curves"]) for p in ITERATIVE for plane, e in summary["protocols"].get(p, {}).items()
    ]
    if curves:
        fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.6), squeeze=False)
        for ax, (protocol, plane, curve) in zip(axes[0], curves, strict=True):
            for name in SELECTIONS:
                ax.plot(range(1, len(curve[name]) + 1), curve[name], marker="o", label=name)
            ax.set(title=f"{protocol} ({plane})", xlabel="prompt step", ylabel="mean IoU", ylim=(0, 1))
            ax.legend()
        written.append(_save(fig, out_dir / "iou_vs_points.png"))
    slices = [r for r in rows if r["row"] == "slice"]
    protocols = sorted({r["protocol"] for r in slices})
    if slices:
        fig, ax = plt.subplots(figsize=(6, 4))
        for protocol in protocols:
            mine = [r for r in slices if r["protocol"] == protocol]
            ax.scatter(
                [r["area_mm2"] for r in mine],
                [r["selections"]["oracle"]["iou"] for r in mine],
                s=8,
                label=protocol,
            )
        ax.axvline(300, color="grey", linestyle="--", linewidth=1)
        ax.set(xscale="log", xlabel="target area (mm²)", ylabel="best IoU (oracle)", ylim=(0, 1))
        ax.legend(fontsize=7)
        written.append(_save(fig, out_dir / "best_iou_vs_area.png"))
        grades = sorted({r["grade"] or "unknown" for r in slices})
        fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(protocols) * len(grades)), 4))
        data, labels = [], []
        for protocol in protocols:
            for grade in grades:
                data.append(
                    [
                        r["selections"]["oracle"]["iou"]
                        for r in slices
                        if r["protocol"] == protocol and (r["grade"] or "unknown") == grade
                    ]
                )
                labels.append(f"{protocol}\n{grade}")
        ax.boxplot(data, tick_labels=labels)
        ax.set(ylabel="best IoU (oracle)", ylim=(0, 1))
        ax.tick_params(axis="x", labelsize=7)
        written.append(_save(fig, out_dir / "best_iou_by_grade.png"))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        # PNG metadata carries the matplotlib version only: same data -> same bytes.
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path
