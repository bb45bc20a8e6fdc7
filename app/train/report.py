"""The figures a person reads after training: report.json, report.md, confusion_matrix.png.

`figures(logits, labels, classes)` gives top-1, top-5 (top-k for fewer than 5 classes),
macro F1, each class's precision, recall, F1 and support, and the confusion matrix (rows:
the true class, columns: the predicted one, in `classes` order). `write(folder, report,
examples)` writes the three files, each whole or not at all; report.md lists the pairs most
often confused, with example files. The picture is drawn with Pillow (a runtime dependency).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont

CELL = 28  # confusion-matrix cell, pixels
WORST = 10  # confused pairs listed in report.md
EXAMPLES = 3  # example files per pair


def figures(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """Top-1, top-5, macro F1, per-class figures and the confusion matrix."""
    k = len(classes)
    predicted = logits.argmax(1)
    top5 = logits.topk(min(5, k), dim=1).indices.eq(labels[:, None]).any(1)
    matrix = torch.zeros(k, k, dtype=torch.long)
    matrix.index_put_((labels, predicted), torch.ones_like(labels), accumulate=True)
    per_class = {}
    for i, name in enumerate(classes):
        hits, said, support = int(matrix[i, i]), int(matrix[:, i].sum()), int(matrix[i].sum())
        precision = hits / said if said else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return {
        "images": len(labels),
        "top1": float((predicted == labels).float().mean()),
        "top5": float(top5.float().mean()),
        "macro_f1": sum(c["f1"] for c in per_class.values()) / k,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


def confused(
    test: dict[str, Any], classes: list[str], examples: dict[tuple[int, int], list[str]]
) -> list[dict[str, Any]]:
    """The pairs (true, predicted) most often confused, with up to EXAMPLES files each."""
    matrix = test["confusion_matrix"]
    pairs = [
        (matrix[t][p], t, p)
        for t in range(len(classes))
        for p in range(len(classes))
        if t != p and matrix[t][p]
    ]
    return [
        {
            "true": classes[t],
            "predicted": classes[p],
            "count": n,
            "examples": examples.get((t, p), [])[:EXAMPLES],
        }
        for n, t, p in sorted(pairs, key=lambda x: (-x[0], x[1], x[2]))[:WORST]
    ]


def write(folder: Path, report: dict[str, Any]) -> list[Path]:
    """Write report.json, report.md and confusion_matrix.png into `folder`; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [
        _replace(folder / "report.json", lambda p: p.write_text(json.dumps(report, indent=1))),
        _replace(folder / "report.md", lambda p: p.write_text(markdown(report), "utf-8")),
        _replace(folder / "confusion_matrix.png", lambda p: picture(report).save(p, "PNG")),
    ]
    return written


def _replace(path: Path, save: Callable[[Path], None]) -> Path:
    """Save to a hidden file beside `path`, then rename it: whole or absent, even on Ctrl-C."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        save(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def markdown(report: dict[str, Any]) -> str:
    """report.md: the test figures, each class's, the worst-confused pairs, what was left out."""
    test, name = report["test"], report["name"]
    lines = [
        f"# {name}: trained on {report['data']}",
        "",
        f"Test: top-1 {test['top1']:.1%}, top-5 {test['top5']:.1%}, macro F1 "
        f"{test['macro_f1']:.3f} on {test['images']} pictures ({report['stage']}).",
        "",
        "| Class | Precision | Recall | F1 | Test pictures |",
        "|---|---|---|---|---|",
    ]
    for label, c in test["per_class"].items():
        lines.append(
            f"| {label} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | "
            f"{c['support']} |"
        )
    lines += ["", "## Most confused", ""]
    lines += [
        f"- {c['true']} taken for {c['predicted']}: {c['count']} ({', '.join(c['examples'])})"
        for c in report["confused"]
    ] or ["- none: every test picture was named right"]
    lines += ["", f"## Left out ({len(report['skipped'])})", ""]
    lines += [f"- {s['file']}: {s['reason']}" for s in report["skipped"]] or ["- nothing"]
    if report["leakage"]:
        lines += ["", f"## Leakage: {len(report['leakage'])} pictures in two splits", ""]
        for leak in report["leakage"]:
            lines.append("- " + ", ".join(f"{f} ({s})" for f, s in leak["files"].items()))
    return "\n".join(lines) + "\n"


def picture(report: dict[str, Any]) -> Image.Image:
    """The confusion matrix as a picture: rows true, columns predicted, darker for more."""
    classes, matrix = report["classes"], report["test"]["confusion_matrix"]
    font = ImageFont.load_default()
    margin, top = 8 + max(int(font.getlength(c)) for c in classes), 40
    side = CELL * len(classes) + 8
    img = Image.new("RGB", (margin + max(side, 200), top + side), "white")
    draw = ImageDraw.Draw(img)
    draw.text((margin, 4), "predicted ->   (rows: true class)", fill="black", font=font)
    for i, name in enumerate(classes):
        draw.text((4, top + i * CELL + 8), name, fill="black", font=font)
        # Column names: their first characters, which fit a cell.
        draw.text((margin + i * CELL + 2, 22), name[:4], fill="black", font=font)
        total = max(sum(matrix[i]), 1)
        for j, n in enumerate(matrix[i]):
            shade = 255 - int(215 * n / total)
            box = (margin + j * CELL, top + i * CELL, margin + (j + 1) * CELL - 1)
            draw.rectangle((*box, top + (i + 1) * CELL - 1), fill=(shade, shade, 255))
            if n:
                colour = "white" if shade < 128 else "black"
                draw.text((box[0] + 4, box[1] + 8), str(n), fill=colour, font=font)
    return img


def log_mlflow(uri: str, report: dict[str, Any], files: list[Path]) -> None:
    """Log the recipe, test figures and files to MLflow at `uri` (an optional package)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_name=report["name"]):
        mlflow.log_params({k: str(v) for k, v in report["recipe"].items()})
        mlflow.log_metrics({k: report["test"][k] for k in ("top1", "top5", "macro_f1")})
        for path in files:
            mlflow.log_artifact(str(path))
