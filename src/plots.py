"""Draw the loss and lr charts without a network: PNG and SVG files and one self-contained HTML page.

Not a DVC stage: run it (or `make plots`) after `dvc repro`. The charts are the ones `dvc plots show` draws,
from dvc.yaml's plot definitions and templates, as DVC fills them (`dvc plots show --json`); vl-convert
renders them and inlines Vega's JavaScript in the page, where DVC's own page loads it from a CDN.
"""

import argparse
import json
import subprocess
from pathlib import Path

from chunktrain.recipe.errors import PipelineError, run_stage

def chart_specs() -> dict[str, dict]:
    """Each plot of dvc.yaml by name, as the Vega-Lite spec `dvc plots show` renders."""
    result = subprocess.run(["dvc", "plots", "show", "--json"], capture_output=True, text=True)
    if result.returncode != 0:
        reason = " ".join(result.stderr.split())[:300]
        raise PipelineError(f"dvc plots show failed ({reason}); run `dvc repro` first")
    shown = json.loads(result.stdout)
    specs = {name: plots[0]["content"] for name, plots in shown.get("data", shown).items()
             if plots and isinstance(plots[0].get("content"), dict)}
    if not specs:
        raise PipelineError("dvc plots show has nothing to draw; run `dvc repro` first (evaluate writes the curves)")
    return specs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("metrics/plots"),
                        help="folder for <plot>.png, <plot>.svg and index.html")
    args = parser.parse_args(argv)
    import vl_convert

    specs = chart_specs()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, spec in specs.items():
        (args.out / f"{name}.png").write_bytes(vl_convert.vegalite_to_png(spec, scale=2))
        (args.out / f"{name}.svg").write_text(vl_convert.vegalite_to_svg(spec))
    # One page, one chart of the charts one above the other: separate embeds would share one element id.
    stacked = {"vconcat": [{key: value for key, value in spec.items() if key != "$schema"} for spec in specs.values()]}
    (args.out / "index.html").write_text(vl_convert.vegalite_to_html(stacked, bundle=True))
    print(f"plots: {', '.join(specs)} written to {args.out}/ (PNG, SVG and index.html, which draws offline)")


if __name__ == "__main__":
    run_stage(main)
