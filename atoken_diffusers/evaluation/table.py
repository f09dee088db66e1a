"""The report of ``atoken evaluate`` as one Markdown table (the JSON report is the same dict, written as is)."""

from __future__ import annotations

NOT_COMPUTED = "not computed"
COLUMNS = ("model", "kind", "items", "compression (s x s x t, ch)", "floats / patch", "PSNR", "SSIM", "LPIPS",
           "rFID / rFVD", "s / item")


def _number(value, digits: int) -> str:
    return "inf" if value == float("inf") else f"{value:.{digits}f}"


def _set_metric(row: dict, report: dict) -> str:
    if row["kind"] == "meshes":
        return "-"
    name = "rfid" if row["kind"] == "images" else "rfvd"
    if name not in row:
        return NOT_COMPUTED
    return "needs >= 2 items" if row[name] is None else _number(row[name], 2)


def _compression(row: dict) -> str:
    c = row["compression"]
    text = f"{c['spatial']}x{c['spatial']}x{c['temporal']}, {c['channels']}"
    return text + (f", {c['bits_per_token']:g} bits/token" if c.get("bits_per_token") else "")


def markdown(report: dict) -> str:
    """Protocol line, the table (one row per model and media kind), and a note naming what was not computed."""
    p = report["protocol"]
    counts = ", ".join(f"{n} {k}" for k, n in report["items"].items())
    kinds = report["items"]
    protocol = [f"{p['resolution']} px ({'centre crop' if p['fit'] == 'crop' else 'edge-padded'})"]
    if "videos" in kinds:
        protocol.append(f"videos' first {p['frames']} frames")
    if "meshes" in kinds:
        protocol.append("meshes: 3D PSNR/SSIM/LPIPS of Gaussian renders at 8 held-out views")
    lines = [f"Protocol: {counts}; {', '.join(protocol)}; {p['dtype']} on {p['device']}.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in report["rows"]:
        lpips = _number(row["lpips"], 4) if "lpips" in row else NOT_COMPUTED
        kind = "meshes (3D)" if row["kind"] == "meshes" else row["kind"]
        cells = [row["name"], kind, str(row["items"]), _compression(row), str(row["floats_per_patch"] or "-"),
                 _number(row["psnr"], 2), _number(row["ssim"], 4), lpips, _set_metric(row, report),
                 _number(row["seconds"], 3)]
        lines.append("| " + " | ".join(cells) + " |")
    if report["not_computed"]:
        lines += ["", f"{NOT_COMPUTED}: {'; '.join(report['not_computed'])} - no feature-network file given."]
    return "\n".join(lines) + "\n"
