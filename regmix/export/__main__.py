"""`regmix export MIXTURE --to TARGET`: a mixture config as the files another trainer reads.

MIXTURE is a config file or a name below mixture_config/ (the_pile_regmix, optimal_mixture.yaml, ...), read
as `pretrain` reads it (the large run's settings where the file has none). Targets:
{targets}

Weights are converted to the target's unit (per token, per packed sequence, per document: --samples), the
token budget (--tokens, else the config's steps x batch x block) gives each domain's epochs and the
repetition settings, and schedules become the target's stages or one file per phase. The output says what
was converted, and export_notes.txt beside the files keeps it.

    regmix export optimal_mixture.yaml --to olmo-core megatron --corpus data/pile
    regmix export the_pile_regmix --to hf-datasets --corpus data/pile --paths '/data/hf/{{domain}}'
    regmix export the_pile_doremi --to levanter --paths 'gs://bucket/pile/{{split}}/{{domain}}-*.jsonl.gz'
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Sequence

from regmix.cli import ArgumentParser, integer_at_least, number_above, run_command
from regmix.core.files import ConfigError, check_output_folder, write_atomic
from regmix.data.corpus import load_manifest
from regmix.export import TARGETS, export, target_unit
from regmix.export.plan import UNITS, ExportPlan
from regmix.settings.run_config import load_run_config
from regmix.settings.training import TrainingSettings
from regmix.train.pretrain import resolve_mixture

TARGET_LIST = "\n".join(f"  {name:<12} {what}" for name, what in TARGETS.items())


def check_template(template: str | None) -> None:
    """--paths names each domain: a template without {domain} (or with another field) is refused at once."""
    if template is None:
        return
    try:
        filled = template.format(domain="\0", split="\1")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError("--paths", f"{template!r} is not a template of {{domain}} and {{split}}: {exc!r}") from None
    if "\0" not in filled:
        raise ConfigError("--paths", f"{template!r} has no {{domain}}: every domain would read the same data")


def plan_from_args(args: argparse.Namespace) -> ExportPlan:
    check_template(args.paths)
    path = resolve_mixture(args.mixture)
    config = load_run_config(path, defaults=TrainingSettings.from_name("large_1b"))
    corpus = None
    if args.corpus is not None:
        corpus = load_manifest(args.corpus).absolute()
        config.check_corpus(corpus, path)
    t = config.training
    budget = args.tokens or t.max_step * t.global_batch_size * t.block_size
    return ExportPlan(config.name, config, path, corpus, args.paths, budget, args.max_repetition)


def report(plan: ExportPlan, target: str, files: list[Path], unit: str) -> str:
    epochs = plan.epochs() or {}
    module_unit = f"weights per {unit[:-1]}"
    lines = [f"{target}: {len(files)} files in {files[0].parent}" if files else f"{target}: nothing written"]
    for phase in plan.phases:
        weights = plan.weights(phase.mixture, unit)  # type: ignore[arg-type]
        if len(plan.phases) > 1:
            lines.append(f"  steps {phase.start_step}-{phase.end_step}:")
        lines.append(f"  {'domain':<28}{'tokens':>10}{module_unit:>22}{'epochs':>9}")
        lines += [f"  {d:<28}{phase.mixture[d]:>10.4g}{w:>22.4g}"
                  f"{format(epochs[d], '.2f') if d in epochs else '-':>9}" for d, w in weights.items()]
    lines += [f"  - {line}" for line in plan.describe() + plan.notes]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, list[Path]]:
    p = ArgumentParser(prog="regmix export", description=__doc__.format(targets=TARGET_LIST),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mixture", help="mixture config: a YAML file or a name below mixture_config/")
    p.add_argument("--to", nargs="+", required=True, choices=[*TARGETS, "all"], metavar="TARGET",
                   help=f"one or more of {', '.join(TARGETS)}, or all")
    p.add_argument("--output", type=Path, default=None,
                   help="folder for the files (default: exports/<mixture>/<target>)")
    p.add_argument("--corpus", type=Path, help="the prepared corpus: token files, tokens per document and the "
                                               "epochs per domain come from its manifest")
    p.add_argument("--paths", metavar="TEMPLATE",
                   help="where the target's own copy of each domain lies, with {domain} and {split}: "
                        "'/data/{split}/{domain}' (default: regmix's shards, for targets that read them)")
    p.add_argument("--tokens", type=integer_at_least(1), help="training tokens of the target run (default: the "
                                                              "config's max_step x global_batch_size x block_size)")
    p.add_argument("--max-repetition", type=number_above(1.0, inclusive=True),
                   help="most times a domain's tokens may be read (default: what the mixture needs)")
    p.add_argument("--samples", choices=UNITS,
                   help="what one of the target's samples is, for targets that take either (litdata, mosaicml, "
                        "hf-datasets): packed sequences or whole documents (default: the target's usual one)")
    args = p.parse_args(argv)
    targets = list(TARGETS) if "all" in args.to else list(dict.fromkeys(args.to))
    written: dict[str, list[Path]] = {}
    loaded = plan_from_args(args)
    units = {target: target_unit(loaded, target, args.samples) for target in targets}  # before writing any
    for target in targets:
        plan = dataclasses.replace(loaded, notes=[])
        output = check_output_folder(args.output / target if args.output and len(targets) > 1 else
                                     args.output or Path("exports") / plan.name / target)
        files = export(plan, target, output, args.samples)
        text = report(plan, target, files, units[target])
        write_atomic(output / "export_notes.txt", text + "\n")
        print(text)
        written[target] = files
    return written


if __name__ == "__main__":
    raise SystemExit(run_command(main))
