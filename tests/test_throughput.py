"""Folder runs: images batched together give each image its own result; torchrun ranks share a folder."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from varedit.cli import main
from varedit.data.synthetic import render


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for i in range(5):
        Image.fromarray(render(i, 100 + i, 96 + 32 * (i % 3))).save(d / f"im{i}.png")
    return d


def _run(*args, env=None):
    res = CliRunner().invoke(main, [str(a) for a in args], env=env)
    assert res.exit_code == 0, res.output
    return res


def test_batched_folder_equals_one_by_one(folder, tmp_path):
    common = ["inpaint", folder, "--box", "0.25,0.25,0.75,0.75", "--seed", "3", "--n", "2"]
    _run(*common, "-o", tmp_path / "one")
    _run(*common, "-o", tmp_path / "batch", "--batch-size", "3")
    for i in range(5):
        for c in range(2):
            a = np.asarray(Image.open(tmp_path / "one" / f"im{i}_{c}.png"), np.int16)
            b = np.asarray(Image.open(tmp_path / "batch" / f"im{i}_{c}.png"), np.int16)
            assert a.shape == b.shape and np.abs(a - b).max() <= 1  # a larger matrix product may round apart
            sa = json.loads((tmp_path / "one" / f"im{i}_{c}.json").read_text())
            sb = json.loads((tmp_path / "batch" / f"im{i}_{c}.json").read_text())
            assert sa["label"] == sb["label"] and sa["seed"] == sb["seed"]


def test_torchrun_ranks_share_a_folder_without_writing_twice(folder, tmp_path):
    out = tmp_path / "o"
    for rank in (0, 1):
        _run("inpaint", folder, "--box", "10,10,60,60", "-o", out, "--seed", "1",
             env={"RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank)})
    written = sorted(p.name for p in out.glob("*.png"))
    assert written == [f"im{i}.png" for i in range(5)]
    ranks = {json.loads((out / f"im{i}.json").read_text())["input"] for i in range(5)}
    assert len(ranks) == 5
    # a resumed run skips everything; without --skip-existing it refuses
    res = _run("inpaint", folder, "--box", "10,10,60,60", "-o", out, "--skip-existing")
    assert res.output.strip() == ""


def test_a_failing_worker_does_not_stall_the_batch(tiny_pipeline):
    """A worker whose task fails before its model call leaves the batch; the others finish."""
    from varedit.editing.batching import BatchingBackend
    batching = BatchingBackend(tiny_pipeline.editor.backend, workers=3)
    ed = tiny_pipeline.editor.with_backend(batching)
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    results: dict[int, object] = {}

    def work(i: int) -> None:
        with batching.worker():
            try:
                box = (1, 1, 30, 30) if i != 1 else (500, 500, 600, 600)  # worker 1: box outside the image
                results[i] = ed.inpaint(img, box=box, seed=i, output_type="np").image
            except ValueError as e:
                results[i] = e

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert isinstance(results[1], ValueError)
    alone = tiny_pipeline.inpaint(img, box=(1, 1, 30, 30), seed=2, output_type="np").image
    assert np.abs(results[2].astype(int) - alone.astype(int)).max() <= 1
