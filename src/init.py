"""Stage `init`: build the seeded model (or load model.pretrained's weights into it) and optimizer and write the
epoch-0 checkpoint, with the data's transform."""

import argparse
from pathlib import Path

import torch

from chunktrain.recipe.checkpoint import code_id, lineage, make_checkpoint, save_checkpoint
from chunktrain.recipe.specs import InitSpec
from chunktrain.recipe.errors import PipelineError, run_stage
from chunktrain.recipe.model import build_model, build_optimizer, check_built, model_config
from chunktrain.recipe.pretrained import load_pretrained, pretrained_id
from chunktrain.recipe.splits import read_dataset

CODE = ("init.py", "chunktrain/recipe", "models")  # under src/: its code deps in dvc.yaml


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", type=Path, required=True, help="data/plan/init.json")
    parser.add_argument("--dataset", type=Path, required=True,
                        help="the dataset folder generate wrote (only its dataset.json is read)")
    parser.add_argument("--out", required=True, help="checkpoint to write")
    args = parser.parse_args(argv)
    spec, dataset = InitSpec.read(args.spec), read_dataset(args.dataset)
    if dataset.transform.get("task") != spec.model.task:
        raise PipelineError(f"{args.dataset} was not written for model.task {spec.model.task}; run `dvc repro`")
    torch.manual_seed(spec.seed)
    config = model_config(spec.model, dataset.transform)
    model = build_model(config)
    if spec.model.pretrained:
        load_pretrained(model, spec.model.pretrained)
    check_built(model, config)
    optimizer = build_optimizer(model, config)
    parent = pretrained_id(spec.model.pretrained) if spec.model.pretrained else None  # the weights it starts from
    record = lineage(spec, parent, dataset.id, code_id(Path(__file__).parent, *CODE))
    save_checkpoint(make_checkpoint(model, optimizer, epoch=0, loss=None, model_config=config, lineage=record,
                                    global_step=0, history=[], transform=dataset.transform), args.out)
    print(f"init: {args.out}: {sum(p.numel() for p in model.parameters()):,} parameters, {config}")


if __name__ == "__main__":
    run_stage(main)
