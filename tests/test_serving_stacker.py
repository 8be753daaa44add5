"""Serving a saved LGBMStacker: given the test phase's histories it ranks as the pipeline's test phase did (up to
float32 rounding of nearly tied base scores);
for known users it ranks their unseen items from their whole history."""
import numpy as np
import pytest

from mmrecbole import serving
from mmrecbole.cli import main
from mmrecbole.errors import ServingError
from mmrecbole.quick_start import run
from tests.planted_mm import write_planted_mm
from tests.test_stacker import stacker_settings


@pytest.fixture(scope="module")
def stacked(tmp_path_factory):
    work = tmp_path_factory.mktemp("stacker-serving")
    data_path, files, _ = write_planted_mm(work / "data", n_users=120)
    settings = stacker_settings(data_path, files, work)
    result = run("LGBMStacker", "plantedmm", config_dict=settings, log_dir=str(work / "log"), console_log=False)
    return result, settings


def test_the_served_stacker_ranks_the_test_phase_as_the_pipeline_did(stacked):
    from mmrecbole.ensemble import candidates, pipeline, phases
    from mmrecbole.ensemble.evaluation import ranked_lists
    from mmrecbole.ensemble.settings import resolve
    from mmrecbole.ensemble.stacker import LGBMStacker
    from mmrecbole.quick_start import load_run

    result, settings_dict = stacked
    folder = result["checkpoint"]
    settings = resolve("plantedmm", config_dict=settings_dict)
    reference = phases.load_reference(settings.protocol)
    scorers = [candidates.BaseScorer(b["label"], load_run(b["checkpoint"])) for b in result["base_models"]]
    content = pipeline._content_tables(settings, reference)
    test = reference.phases["test"]
    frame = pipeline.phase_frame(test, scorers, settings, reference, content)
    expected = ranked_lists(frame.pool, LGBMStacker.load(folder).predict(frame.matrix), 10)

    served = serving.load(folder)
    answers = served.rank(list(test.users), test.history_items, test.history_times, 10)
    assert len(answers) == len(test.users) > 100
    ids = served.bases[0].bundle.item_ids
    # Serving scores each base model in its own batches: float32 sums in another order differ by an ulp (3e-8
    # here), enough to swap two nearly tied base scores at the pool's N-th place on some CPUs, and with it one
    # candidate. So: almost every list identical, and none more than one item apart.
    served_lists = [[i.item_id for i in answer.items] for answer in answers]
    pipeline_lists = [[ids[item] for item in expected[row] if item > 0] for row in range(len(answers))]
    identical = np.mean([a == b for a, b in zip(served_lists, pipeline_lists)])
    assert identical >= 0.95, identical
    assert all(len(set(a) & set(b)) >= len(b) - 1 for a, b in zip(served_lists, pipeline_lists))


def test_the_served_stacker_answers_known_users_from_their_whole_history(stacked, capsys):
    result, _ = stacked
    served = serving.load(result["checkpoint"])
    answers = served.recommend(["3", "1", "2"], k=5)
    assert [a.user for a in answers] == ["3", "1", "2"]
    for answer in answers:
        assert len(answer.items) == 5 and [i.rank for i in answer.items] == [1, 2, 3, 4, 5]
        assert not {i.item_id for i in answer.items} & set(served.history_of(answer.user))
        scores = [i.score for i in answer.items]
        assert scores == sorted(scores, reverse=True)
    assert [i.item_id for i in served.recommend(["1"], k=5)[0].items] == [i.item_id for i in answers[1].items]
    with pytest.raises(ServingError, match="ranks known users only"):
        served.recommend_history(["1"])
    assert main(["--recommend", f"--checkpoint={result['checkpoint']}", "--users=1", "--k=3"]) == 0
    assert "LGBMStacker on plantedmm, user 1" in capsys.readouterr().out
