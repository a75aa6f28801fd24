"""Bad score files: bounded cost, specific messages (issue 15, items 1 and 11)."""

from __future__ import annotations

import time
import tracemalloc

import pytest

from routerdc.data import DataError, load_scores
from routerdc.limits import BOUNDS

HEADER = "prompt,eval_name,a,b\n"


def test_huge_list_literal_cell_is_refused_fast_and_small(tmp_path):
    """A 14.8 MB list literal took the app from 2.4 to 6.2 GB: now refused before ast.literal_eval."""
    cell = "[" + ",".join(["'ab'"] * 2_000_000) + "]"
    p = tmp_path / "big.csv"
    p.write_text(HEADER + f'"{cell}",mmlu,1,0\n', encoding="utf-8")
    tracemalloc.start()
    t = time.perf_counter()
    with pytest.raises(DataError, match="list-literal cell may have at most"):
        load_scores(p)
    secs = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert secs < 5
    assert peak < 200 * 2**20  # the file text and its CSV row (~12 MB each), not GBs of parsed strings


def test_list_literal_with_too_many_items_is_refused(tmp_path):
    cell = "[" + ",".join(["'a'"] * (BOUNDS.max_list_items + 1)) + "]"
    p = tmp_path / "many.csv"
    p.write_text(HEADER + f'"{cell}",mmlu,1,0\n', encoding="utf-8")
    with pytest.raises(DataError, match="at most"):
        load_scores(p)


def test_normal_list_literal_still_reads(tmp_path):
    p = tmp_path / "ok.csv"
    p.write_text(HEADER + "\"['What is 2+2?', 'A. 4']\",mmlu,1,0\n", encoding="utf-8")
    (s,) = load_scores(p)
    assert s.queries == ("What is 2+2?\nA. 4",)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_deeply_nested_json_has_a_specific_message(tmp_path, suffix):
    p = tmp_path / f"deep{suffix}"
    p.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(DataError, match="nested too deeply"):
        load_scores(p)


def test_json_object_instead_of_a_list_names_the_shape(tmp_path):
    p = tmp_path / "obj.json"
    p.write_text('{"question": "q", "scores": {"a": 1}}', encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_scores(p)
    msg = str(e.value)
    assert "_Obj" not in msg and "an object (keys ['question', 'scores'])" in msg


def test_row_of_the_wrong_shape_names_the_json_type(tmp_path):
    p = tmp_path / "rows.json"
    p.write_text('[["q", 1]]', encoding="utf-8")
    with pytest.raises(DataError, match="expected an object, got a list"):
        load_scores(p)
