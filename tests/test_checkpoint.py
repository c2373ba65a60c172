"""EM checkpoints: atomic files, best and last N kept, exact resume, SIGKILL at random points."""

import os
import random
import signal
import struct
import time
import warnings
from pathlib import Path

import pytest
import torch

import lds
from lds.checkpoint import CheckpointStore
from lds.em import fit_em
from lds.errors import LibraryWarning, OverwriteError, ValidationError
from native_fixtures import assert_fixed_length_only

pytestmark = pytest.mark.filterwarnings("error::lds.errors.LibraryWarning")  # no checkpoint may be skipped


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: torch's thread pool only adds overhead on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def problem(multi=False, T=10):
    true = lds.random_stable_lds(2, [2, 3] if multi else 3, seed=0)
    init = lds.random_stable_lds(2, [2, 3] if multi else 3, seed=5)
    if multi:
        y = {name: lds.sample_lds(true, T, session=name, seed=i).observations
             for i, name in enumerate(true.dataset_names)}
    else:
        y = lds.sample_lds(true, T, seed=1).observations
    return y, init


def fit(y, init, max_iter, **kw):
    return fit_em(y, init, max_iter=max_iter, tol=0.0, progress=False, **kw)


def same_fit(a, b):
    return a.params == b.params and torch.equal(a.log_likelihoods, b.log_likelihoods) and \
        a.num_iterations == b.num_iterations and a.termination == b.termination


@pytest.mark.parametrize("multi", [False, True])
def test_resume_after_interruption_is_bit_for_bit(tmp_path, multi):
    y, init = problem(multi)
    reference = fit(y, init, 9)
    first = fit(y, init, 5, checkpoint_dir=tmp_path, keep_last=2)  # "interrupted" after 5 iterations
    assert [p.name for p in CheckpointStore(tmp_path).paths()] == ["checkpoint-000003.h5", "checkpoint-000004.h5"]
    assert torch.equal(first.log_likelihoods, reference.log_likelihoods[:5])
    resumed = fit(y, init, 9, checkpoint_dir=tmp_path, keep_last=2)
    assert same_fit(resumed, reference)


def test_checkpoint_content(tmp_path):
    y, init = problem()
    reference = fit(y, init, 6)
    fit(y, init, 6, checkpoint_dir=tmp_path, checkpoint_every=2, keep_last=10)
    store = CheckpointStore(tmp_path)
    assert [p.name for p in store.paths()] == [f"checkpoint-00000{i}.h5" for i in (0, 2, 4)]
    latest = store.latest()
    assert latest.iteration == 4 and latest.log_likelihoods == reference.log_likelihoods[:5].tolist()
    assert latest.options["estimate"] == sorted(lds.em.DEFAULT_ESTIMATE) and latest.options["tol"] == 0.0
    first = store.load(store.paths()[0])
    assert first.params == init and first.log_likelihood == reference.log_likelihoods[0].item()
    assert "iteration 4" in repr(latest)
    info = lds.native.read_info(latest.path)
    assert info.metadata["checkpoint"]["iteration"] == 4 and info.format_version == 3
    assert_fixed_length_only(latest.path)


def test_keeps_best_and_last_n(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=2, keep_best=True)
    params = lds.random_stable_lds(2, 3, seed=0)
    scores = [1.0, 5.0, 3.0, 2.0, 2.5, 1.5]
    for i in range(len(scores)):
        store.save(params, i, [0.0] * i + [scores[i]])
    assert [p.name for p in store.paths()] == ["checkpoint-000001.h5", "checkpoint-000004.h5", "checkpoint-000005.h5"]
    assert store.best().iteration == 1 and store.latest().iteration == 5
    fresh = CheckpointStore(tmp_path, keep_last=1, keep_best=False)  # scores read back from the files
    assert [p.name for p in fresh.prune()] == ["checkpoint-000001.h5", "checkpoint-000004.h5"]
    assert [p.name for p in fresh.paths()] == ["checkpoint-000005.h5"]


def test_load_reads_the_file_once(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)
    params = lds.random_stable_lds(2, 3, seed=0)
    path = store.save(params, 0, [-1.5])
    reads = []
    read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self.name) or read_bytes(self))
    loaded = store.load(path)
    assert reads == [path.name]
    assert loaded.params == params and loaded.iteration == 0 and loaded.log_likelihoods == [-1.5]


def test_damaged_latest_is_skipped_and_resume_stays_exact(tmp_path):
    y, init = problem()
    reference = fit(y, init, 8)
    fit(y, init, 5, checkpoint_dir=tmp_path, keep_last=3)
    latest = CheckpointStore(tmp_path).paths()[-1]
    latest.write_bytes(latest.read_bytes()[:-50])
    (tmp_path / ".checkpoint-000005.h5.abcd.tmp").write_bytes(b"half written")
    with pytest.warns(LibraryWarning, match="skipping checkpoint checkpoint-000004.h5.*truncated"):
        resumed = fit(y, init, 8, checkpoint_dir=tmp_path, keep_last=3)
    assert same_fit(resumed, reference)
    assert not list(tmp_path.glob(".checkpoint-*.tmp"))


def test_refuses_other_data_and_accidental_restart(tmp_path):
    y, init = problem()
    fit(y, init, 3, checkpoint_dir=tmp_path)
    with pytest.raises(ValidationError, match="data_sha256"):
        fit(y * 2, init, 5, checkpoint_dir=tmp_path)
    with pytest.raises(ValidationError, match="estimate"):
        fit(y, init, 5, checkpoint_dir=tmp_path, estimate=["A", "C"])
    with pytest.raises(OverwriteError, match="resume=True"):
        fit(y, init, 5, checkpoint_dir=tmp_path, resume=False)
    with pytest.raises(ValidationError, match="keep_last"):
        fit(y, init, 5, checkpoint_dir=tmp_path / "x", keep_last=0)


@pytest.mark.parametrize("change, message", [
    ({"tol": 1e-3}, r"other tolerance \(tol=0.0, this fit has 0.001\)"),
    ({"method": "plain"}, r"other E-step method \(method='auto', this fit has 'plain'\)"),
    ({"params": lds.random_stable_lds(2, 3, seed=6)}, "other starting parameters"),
    ({"params": lds.random_stable_lds(2, 3, seed=5).to(dtype=torch.float32)}, "other starting parameters"),
])
def test_refuses_options_that_change_the_result(tmp_path, change, message):
    y, init = problem()
    fit(y, init, 4, checkpoint_dir=tmp_path, keep_last=2)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    kwargs = {"params": init, "tol": 0.0, **change}
    with pytest.raises(ValidationError, match=message):
        fit_em(y, max_iter=8, progress=False, checkpoint_dir=tmp_path, keep_last=2, **kwargs)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_max_iter_at_or_below_the_checkpoints_is_refused(tmp_path):
    y, init = problem()
    fit(y, init, 6, checkpoint_dir=tmp_path, keep_last=2)
    names = [p.name for p in CheckpointStore(tmp_path).paths()]
    assert names == ["checkpoint-000004.h5", "checkpoint-000005.h5"]
    for max_iter in (3, 5):
        with pytest.raises(ValidationError, match=f"checkpoint-000005.h5 is past max_iter={max_iter}"):
            fit(y, init, max_iter, checkpoint_dir=tmp_path, keep_last=2)
    assert [p.name for p in CheckpointStore(tmp_path).paths()] == names
    assert same_fit(fit(y, init, 6, checkpoint_dir=tmp_path, keep_last=2), fit(y, init, 6))  # the same call again


def test_max_iter_is_checked_on_the_checkpoint_that_loads(tmp_path):
    y, init = problem()
    fit(y, init, 6, checkpoint_dir=tmp_path, keep_last=3)
    newest = CheckpointStore(tmp_path).paths()[-1]
    assert newest.name == "checkpoint-000005.h5"
    newest.write_bytes(newest.read_bytes()[:-50])  # damaged: the resume starts from checkpoint 4
    with pytest.warns(LibraryWarning, match="skipping checkpoint checkpoint-000005.h5") as record:
        resumed = fit(y, init, 5, checkpoint_dir=tmp_path, keep_last=3)
    assert record[0].filename == __file__  # the warning names the caller, not lds
    assert same_fit(resumed, fit(y, init, 5))
    with pytest.warns(LibraryWarning, match="skipping checkpoint checkpoint-000005.h5"), \
            pytest.raises(ValidationError, match="checkpoint-000004.h5 is past max_iter=4"):
        fit(y, init, 4, checkpoint_dir=tmp_path, keep_last=3)


def test_initialization_is_skipped_when_resuming(tmp_path):
    y, _ = problem(T=30)
    reference = fit_em(y, num_states=2, max_iter=4, tol=0.0, progress=False)
    fit_em(y, num_states=2, max_iter=2, tol=0.0, progress=False, checkpoint_dir=tmp_path)
    resumed = fit_em(y, num_states=2, max_iter=4, tol=0.0, progress=False, checkpoint_dir=tmp_path)
    assert same_fit(resumed, reference)


# ---- SIGKILL at random points ----------------------------------------------------------
def _run_child(folder, y, init, max_iter, report_fd):
    """In the forked child: fit with checkpoints, reporting each checkpoint once it is in place."""
    import lds.checkpoint as checkpoint_module

    torch.set_num_threads(1)
    original = checkpoint_module.CheckpointStore.save

    def save_and_report(self, params, iteration, *args, **kwargs):
        path = original(self, params, iteration, *args, **kwargs)
        os.write(report_fd, struct.pack("<i", iteration))
        return path

    checkpoint_module.CheckpointStore.save = save_and_report
    fit(y, init, max_iter, checkpoint_dir=folder, keep_last=2)


def _killed_run(folder, y, init, max_iter, after, delay):
    """Fork a fitting child, wait until it reports checkpoint ``after`` (-1: don't), sleep ``delay``, SIGKILL it.

    Returns the iterations whose checkpoints the child reported as complete.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            os.close(read_fd)
            _run_child(folder, y, init, max_iter, write_fd)
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    reported = []
    while after >= 0 and (not reported or reported[-1] < after) and (chunk := os.read(read_fd, 4)):
        reported.append(struct.unpack("<i", chunk)[0])
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    rest = b""
    while chunk := os.read(read_fd, 4096):
        rest += chunk
    os.close(read_fd)
    return reported + [struct.unpack_from("<i", rest, i)[0] for i in range(0, len(rest), 4)]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork (POSIX)")
def test_sigkill_while_checkpointing_never_corrupts_and_resume_is_exact(tmp_path):
    y, init = problem(T=8)
    max_iter = 6
    start = time.perf_counter()
    reference = fit(y, init, max_iter, checkpoint_dir=tmp_path / "reference", keep_last=2)
    duration = time.perf_counter() - start
    rng = random.Random(1234)
    killed_with_progress = 0
    for trial in range(16):
        folder = tmp_path / f"trial{trial}"
        after = rng.randrange(-1, max_iter - 1)  # kill somewhere in the iteration after this checkpoint
        reported = _killed_run(folder, y, init, max_iter, after, delay=rng.uniform(0.0, 1.5 * duration / max_iter))
        store = CheckpointStore(folder)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a damaged file would be skipped with a warning
            for path in store.paths():
                store.load(path)  # every checkpoint on disk is complete and verifies
            latest = store.latest()
        if reported:
            killed_with_progress += 1
            assert latest is not None and latest.iteration >= max(reported)  # only the iteration in flight is lost
        resumed = fit(y, init, max_iter, checkpoint_dir=folder, keep_last=2)
        assert same_fit(resumed, reference), f"trial {trial}: resume differs"
    assert killed_with_progress >= 8  # the kills really landed during the fit


def test_data_fingerprint_tells_data_apart():
    from lds.checkpoint import data_fingerprint
    from lds.observations import prepare

    y, init = problem()
    same = y.clone()
    changed = y.clone()
    changed[3, 1] = float("nan")  # a missing value is data too
    assert data_fingerprint(y) == data_fingerprint(same) == data_fingerprint(y.numpy())
    assert len({data_fingerprint(v) for v in (y, changed, [y], {"a": y}, y[:-1])}) == 5
    assert data_fingerprint(prepare(init, y)[1]) == data_fingerprint(prepare(init, same)[1])
    with pytest.raises(ValidationError, match="type object"):
        data_fingerprint(object())
