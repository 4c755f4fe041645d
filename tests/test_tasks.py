"""The task table (bertfast.tasks): it is the one place a task name is written, its entries are consistent, and
every registry of the apps and the CLI's subcommands are lookups of it."""
from __future__ import annotations

import ast
import pathlib

import pytest
import torch

from bertfast.bench import options as bench_options
from bertfast.cli import build_parser
from bertfast.config import BertConfig
from bertfast.export.onnx_model import EXPORT_TASKS
from bertfast.pipelines import ONNX_TASKS, PIPELINES
from bertfast.pipelines.base import Pipeline
from bertfast.serving.contract import CONTRACTS, served_tasks
from bertfast.tasks import ALIASES, BY_NAME, TASKS, get_task, load, task_names
from bertfast.training.finetune import TASKS as FINETUNE_TASKS

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "bertfast"
NAMES = {spec.name for spec in TASKS} | set(ALIASES)
# Files where such a string is another format's value, not our task name: sentence_bert_config.json's
# "transformer_task" takes sentence-transformers' own values "feature-extraction" / "fill-mask". The test fails
# when an entry no longer spells one, so the list cannot outlive its reason.
FILE_FORMAT_VALUES = {"st_config.py"}


def _allowed(path: pathlib.Path) -> bool:
    """The table itself and the pipeline modules (their own registration); not the pipelines' registry."""
    relative = path.relative_to(PACKAGE).as_posix()
    return relative == "tasks.py" or (relative.startswith("pipelines/") and path.name != "__init__.py")


def _task_strings(path: pathlib.Path) -> list[int]:
    """The lines of ``path`` holding a string constant equal to a task name or alias."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in NAMES]


def _offenders() -> dict[str, list[int]]:
    found = {path.relative_to(PACKAGE).as_posix(): _task_strings(path)
             for path in sorted(PACKAGE.rglob("*.py")) if not _allowed(path)}
    return {relative: lines for relative, lines in found.items() if lines}


def test_no_task_name_is_written_outside_the_table_and_the_pipeline_modules():
    offenders = _offenders()
    new = [f"bertfast/{relative}:{line}" for relative, lines in offenders.items()
           if relative not in FILE_FORMAT_VALUES
           for line in lines]
    assert not new, "task names outside bertfast/tasks.py (look them up in the table instead):\n" + "\n".join(new)
    stale = sorted(FILE_FORMAT_VALUES - set(offenders))
    assert not stale, f"these files no longer spell task names: remove them from FILE_FORMAT_VALUES: {stale}"


def test_the_scan_finds_a_task_name(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('"""fill-mask, in a docstring, is prose."""\nTASK = "fill-mask"\nOTHER = f"{TASK}-x"\n')
    assert _task_strings(sample) == [2]


def test_names_and_aliases_resolve_to_one_entry_each():
    assert len(BY_NAME) == len(TASKS) and not set(ALIASES) & set(BY_NAME)
    for alias, name in ALIASES.items():
        assert get_task(alias) is BY_NAME[name]
    with pytest.raises(ValueError, match=r"unknown task 'summarize'; available: \[.*'ner'.*\]"):
        get_task("summarize")
    with pytest.raises(ValueError, match=r"unknown task 'rerank'; available: \['feature-extraction', 'fill-mask', "
                                         r"'multiple-choice', 'ner', 'next-sentence', 'pretraining', "):
        get_task("rerank", "export")  # no export of its own: the list names the tasks that have one


def _meta_keys(spec) -> list[str]:
    with torch.device("meta"):
        return list(spec.model_class(BertConfig.from_preset("tiny")).state_dict())


@pytest.mark.parametrize("spec", TASKS, ids=lambda spec: spec.name)
def test_every_string_of_an_entry_resolves_and_its_parts_agree(spec):
    keys = _meta_keys(spec)
    if spec.head_prefix is None:
        assert not any(key.startswith(("cls.", "classifier.", "qa_outputs.")) for key in keys)
    else:
        assert any(key.startswith(spec.head_prefix) for key in keys), (spec.head_prefix, keys[-3:])
    if spec.pipeline is not None:
        cls = load(spec.pipeline)
        assert issubclass(cls, Pipeline) and issubclass(spec.model_class, cls.model_class)
        export = get_task(spec.export_task)
        assert export.export is not None and issubclass(spec.model_class, export.model_class)
    if spec.export is not None:
        assert spec.export.outputs and all(isinstance(d, (str, int)) for dims in spec.export.outputs.values()
                                           for d in dims)
    if spec.bench is not None:
        assert spec.export is not None and set(spec.bench) <= set(spec.export.outputs)
    if spec.serving is not None:
        assert spec.pipeline is not None and callable(load(spec.serving.run))
        assert spec.serving.check is None or callable(load(spec.serving.check))
    if spec.finetune is not None:
        finetune = spec.finetune
        assert all(callable(load(target)) for target in (finetune.data, finetune.reader, finetune.scores))
        assert (finetune.best_metric is None) == finetune.problem_types and spec.head is not None
    if spec.cli is not None:
        assert spec.pipeline is not None and callable(load(spec.cli.setup))


def test_the_registries_are_lookups_of_the_table():
    assert sorted(PIPELINES) == sorted(task_names("pipeline"))
    assert all(PIPELINES[name] is load(BY_NAME[name].pipeline) for name in PIPELINES)
    assert ONNX_TASKS == {"sentence-embedding": "feature-extraction", "sparse-embedding": "fill-mask",
                          "rerank": "text-classification"}
    assert list(EXPORT_TASKS) == task_names("export") and all(EXPORT_TASKS[n] is BY_NAME[n] for n in EXPORT_TASKS)
    assert sorted(CONTRACTS) == served_tasks() == sorted(set(task_names("serving")) & set(task_names("pipeline")))
    corpus = [spec.name for spec in TASKS if spec.corpus_bench]
    assert bench_options.TASKS == (*task_names("bench"), *corpus) and bench_options.DEFAULT_TASK in bench_options.TASKS
    assert corpus == [bench_options.CORPUS_TASK]
    assert list(FINETUNE_TASKS) == task_names("finetune")


def test_the_cli_exposes_every_task_subcommand_and_alias():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for spec in TASKS:
        if spec.cli is None:
            continue
        command = sub.choices[spec.cli.command]
        assert command.get_default("task") == spec.name
        assert set(spec.cli_aliases) == {spec.name, *spec.aliases} - {spec.cli.command}
        assert all(sub.choices[alias] is command for alias in spec.cli_aliases)
    assert {"fill-mask", "nsp", "embed", "classify", "ner", "qa", "rerank", "next-sentence", "feature-extraction",
            "text-classification", "sentiment-analysis", "token-classification", "question-answering"} <= set(
        sub.choices)
