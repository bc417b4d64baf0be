"""User stages, datatrove filters by class path and keep functions (pipelines/stages/user.py), without Ray: loading
and checking at config time, placement in the chain, what they do to real documents, and the rules a stage's
batches must keep. The module under test (the README's example, configs/mystages.py, and stages that break the
rules) lives outside the repository, as a user's would."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from orchestration.config.pipeline import load_pipeline_config
from pipelines.readers import read_file
from pipelines.records import REASON, STAGE_SCHEMA, load_metadata
from pipelines.stages import ShardContext, build
from pipelines.stages.user import StageError
from pipelines.typed_config import ConfigError
from repo_paths import REPO

QUICKSTART = REPO / "configs" / "quickstart.yaml"

MODULE = (REPO / "configs" / "mystages.py").read_text() + '''


class LosesRows(Stage):
    name = "loses_rows"

    def apply(self, batch, ctx):
        return batch.slice(1)


class Reorders(Stage):
    name = "reorders"

    def apply(self, batch, ctx):
        return batch.take(list(reversed(range(batch.num_rows))))


class Raises(Stage):
    name = "raises"

    def apply(self, batch, ctx):
        if any("boom" in t for t in batch.column("text").to_pylist()):
            raise ValueError("no booms here")
        return batch


def five_words(doc):
    n = len(doc["text"].split())
    return True if n >= 5 else ("one_word" if n == 1 else False)


def not_a_verdict(doc):
    return 3
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch) -> str:
    """`mystages_<n>`, a module in a folder outside the repository, on the Python path as a user's would be."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    name = f"mystages_{tmp_path.name.replace('-', '_')}"
    (folder / f"{name}.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(folder))
    yield name
    sys.modules.pop(name, None)


def config(*entries: str, extra: tuple[str, ...] = ()):
    return load_pipeline_config(QUICKSTART, [f"user_stages=[{', '.join(entries)}]", "quality.enabled=false", *extra])


def batch(texts: list[str]) -> pa.Table:
    n = len(texts)
    return pa.Table.from_pydict({"id": [f"d{i}" for i in range(n)], "text": texts, "source": ["t"] * n,
                                 "url": [""] * n, "metadata": ["{}"] * n, REASON: [""] * n}, schema=STAGE_SCHEMA)


def test_a_user_stage_is_placed_typed_and_applied(user_module):
    cfg = config(f"{{name: short, after: filter, stage: '{user_module}:ShortDocs', options: {{min_words: 4}}}}")
    names = [s.name for s in build(cfg)]
    assert names == ["ingest", "extract", "filter", "short", "exact_dedup", "minhash", "tokenize"]
    stage = build(cfg)[3]
    out = stage.apply(batch(["one two three four", "one two", "a b c d e"]), ShardContext("s/00000"))
    assert out.column(REASON).to_pylist() == ["", "too_few_words", ""]
    assert "short_docs" not in [s.name for s in build(cfg)]  # the entry's name, not the class's, names the stage
    params = stage.params()
    assert params["stage"] == f"{user_module}:ShortDocs" and params["options"] == {"min_words": 4}
    assert len(params["source_sha256"]) == 64


def test_editing_the_users_code_changes_its_resume_key(user_module, tmp_path):
    entry = f"{{name: short, after: filter, stage: '{user_module}:ShortDocs'}}"
    before = build(config(entry))[3].params()
    path = Path(sys.modules[user_module].__file__)
    path.write_text(path.read_text() + "\n# an edit\n")
    del sys.modules[user_module]
    after = build(config(entry))[3].params()
    assert before["source_sha256"] != after["source_sha256"] and before["options"] == after["options"]


@pytest.mark.parametrize("entry, message", [
    ("{name: s, after: filter, stage: '%s:ShortDocs', options: {min_words: 0}}", "user_stages.0.options.min_words: must be >= 1"),
    ("{name: s, after: filter, stage: '%s:ShortDocs', options: {min_wrds: 3}}", "user_stages.0.options.min_wrds: unknown key"),
    ("{name: s, after: filter, stage: '%s:Missing'}", "user_stages.0.stage: module '%s' has no 'Missing'"),
    ("{name: s, after: filter, stage: 'no_such_module_x:Stage'}", "user_stages.0.stage: cannot import 'no_such_module_x'"),
    ("{name: s, after: filter, stage: '%s:five_words'}", "is not a subclass of pipelines.stages.base.Stage"),
    ("{name: s, after: quality, keep: '%s:five_words'}", "user_stages.0.after: no stage 'quality' in this pipeline (it is turned off"),
    ("{name: s, after: tokenize, keep: '%s:five_words'}", "user_stages.0.after: tokenize writes token shards"),
    ("{name: filter, after: extract, keep: '%s:five_words'}", "user_stages.0.name: 'filter' is already a stage's name"),
    ("{name: s, after: filter, keep: '%s:five_words', stage: '%s:ShortDocs'}", "give exactly one of stage, datatrove and keep"),
    ("{name: s, after: filter, keep: '%s:five_words', options: {x: 1}}", "user_stages.0.options: a keep function takes no options"),
    ("{name: s, after: ingest, datatrove: datatrove.pipeline.filters.URLFilter, options: {extra_domain: [a.com]}}",
     "user_stages.0.options: got an unexpected keyword argument 'extra_domain' (the arguments of URLFilter: "
     "soft_word_threshold, extra_domains"),
    ("{name: s, after: ingest, datatrove: datatrove.pipeline.filters.LanguageFilter, options: {languages: en, "
     "language_threshold: 0.5, backend: ft176, bogus: 1}}", "got an unexpected keyword argument 'bogus'"),
    ("{name: s, after: ingest, datatrove: pipelines.stages.base.Stage}", "is not a datatrove filter"),
])
def test_bad_entries_are_refused_at_load_naming_the_key(user_module, entry, message):
    with pytest.raises(ConfigError) as err:
        config(entry.replace("%s", user_module))
    assert message.replace("%s", user_module) in str(err.value)


def test_the_readmes_example_config_loads_and_runs_its_stages():
    cfg = load_pipeline_config(REPO / "configs" / "custom_stages.yaml")
    stages = build(cfg)
    assert [s.name for s in stages][2:5] == ["filter", "long_enough", "short_docs"]
    text = " ".join(["word"] * 299)
    out = stages[4].apply(batch([text, text + " word"]), ShardContext("s/0"))
    assert out.column(REASON).to_pylist() == ["too_few_words", ""]  # min_words: 300
    assert stages[3].apply(batch(["tiny", text]), ShardContext("s/0")).column(REASON).to_pylist() == ["under_200_chars", ""]


def test_the_built_in_filters_arguments_are_checked_at_load():
    with pytest.raises(ConfigError, match=r"filter.gopher_quality: got an unexpected keyword argument 'min_doc_word'"
                                          r" \(the arguments of GopherQualityFilter: min_doc_words"):
        load_pipeline_config(QUICKSTART, ["filter.gopher_quality.min_doc_word=10"])


def test_a_datatrove_url_filter_by_class_path_drops_real_pages_with_datatroves_reasons(corpora, tmp_path):
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("# two domains of the dolma WARC sample\ncommoncrawl.org\nkyleclo.com\n\nsoldaini.net\n")
    cfg = config("{name: url_blocklist, after: ingest, datatrove: datatrove.pipeline.filters.URLFilter, "
                 "options: {use_integrated_lists: false, banned_subwords: [maria]}, "
                 f"options_from_files: {{extra_domains: '{blocklist}'}}}}")
    stage = build(cfg)[1]
    assert stage.name == "url_blocklist"
    assert stage.params()["options"]["extra_domains"] == ["commoncrawl.org", "kyleclo.com", "soldaini.net"]
    rows = pa.concat_tables(pa.Table.from_pydict(b, schema=STAGE_SCHEMA)
                            for path in sorted((corpora / "dolma_fixtures").glob("*.warc.gz"))
                            for b in read_file(str(path), path.name, "warc", "warc"))
    out = stage.apply(rows, ShardContext("warc/sample-0000.warc.gz/00000"))
    by_host = {}
    for url, reason in zip(out.column("url").to_pylist(), out.column(REASON).to_pylist()):
        by_host.setdefault(url.split("/")[2], set()).add(reason)
    assert by_host["commoncrawl.org"] == {"url_blocklist:domain"} and by_host["kyleclo.com"] == {"url_blocklist:domain"}
    assert by_host["soldaini.net"] == {"url_blocklist:domain"}
    assert by_host["maria-antoniak.github.io"] == {"url_blocklist:blacklisted_subword"}
    assert by_host["allenai.org"] == {""} and by_host["creativecommons.org"] == {""}
    assert out.column("id").equals(rows.column("id")) and out.column("text").equals(rows.column("text"))


def test_a_datatrove_filter_that_fails_names_the_stage_shard_and_document():
    cfg = config("{name: url_blocklist, after: ingest, datatrove: datatrove.pipeline.filters.URLFilter, "
                 "options: {use_integrated_lists: false}}")
    stage = build(cfg)[1]
    with pytest.raises(StageError, match=r"stage 'url_blocklist' \(datatrove.pipeline.filters.URLFilter\) raised on "
                                         r"shard s/00000, document d0: AssertionError: Document does not have url"):
        stage.apply(batch(["a page without its url"]), ShardContext("s/00000"))


def test_a_keep_function_keeps_drops_and_names_reasons(user_module):
    stage = build(config(f"{{name: five_words, after: extract, keep: '{user_module}:five_words'}}"))[2]
    out = stage.apply(batch(["one", "one two", "one two three four five"]), ShardContext("s/00000"))
    assert out.column(REASON).to_pylist() == ["one_word", "five_words", ""]
    bad = build(config(f"{{name: verdict, after: extract, keep: '{user_module}:not_a_verdict'}}"))[2]
    with pytest.raises(StageError, match=r"keep\(\) returned 3; expected True, False or a drop reason"):
        bad.apply(batch(["x"]), ShardContext("s/00000"))


@pytest.mark.parametrize("cls, rule", [
    ("LosesRows", r"apply\(\) returned 2 rows for 3: rows may be dropped \(a reason in _reason\), never added or removed"),
    ("Reorders", r"apply\(\) reordered or renamed the rows \(row 0 was d0, is d2\)"),
])
def test_a_malformed_batch_is_refused_with_the_rule_it_broke(user_module, cls, rule):
    stage = build(config(f"{{name: bad, after: filter, stage: '{user_module}:{cls}'}}"))[3]
    with pytest.raises(StageError, match=rf"stage 'bad' \({user_module}:{cls}\) on shard s/00000: {rule}"):
        stage.apply(batch(["a", "b", "c"]), ShardContext("s/00000"))


def test_a_stage_that_raises_names_the_document(user_module):
    stage = build(config(f"{{name: raiser, after: filter, stage: '{user_module}:Raises'}}"))[3]
    with pytest.raises(StageError, match=rf"stage 'raiser' \({user_module}:Raises\) raised on shard s/00000, document "
                                         r"d1: ValueError: no booms here"):
        stage.apply(batch(["fine", "boom", "fine too"]), ShardContext("s/00000"))


def test_user_stages_chain_after_each_other_and_ship_their_module(user_module):
    cfg = config(f"{{name: first, after: filter, keep: '{user_module}:five_words'}}",
                 f"{{name: second, after: first, stage: '{user_module}:ShortDocs'}}")
    stages = build(cfg)
    assert [s.name for s in stages][2:5] == ["filter", "first", "second"]
    assert stages[3].modules() == [sys.modules[user_module].__file__] == stages[4].modules()
    metas = load_metadata(stages[4].apply(batch(["a b c"]), ShardContext("s/0")).column("metadata")[0].as_py())
    assert metas == {}
