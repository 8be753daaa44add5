"""Registry: ours first, RecBole's as fallback, helpful unknown-name errors."""
import pytest
import torch
from recbole.model.general_recommender import BPR as RecBoleBPR

import mmrecbole.model.general_recommender as our_general
from mmrecbole import compat, registry
from mmrecbole.errors import ConfigError


def test_recbole_models_are_found():
    assert registry.get_model("BPR") is RecBoleBPR
    assert registry.get_model("SASRec").__name__ == "SASRec"


def test_our_models_shadow_recbole_models(monkeypatch):
    class BPR(RecBoleBPR):
        pass

    BPR.__module__ = "mmrecbole.model.general_recommender.bpr_variant"
    monkeypatch.setattr(our_general, "BPR", BPR, raising=False)
    assert registry.get_model("BPR") is BPR
    assert "BPR" in registry.our_models()


def test_unknown_model_lists_closest_names():
    with pytest.raises(ConfigError) as err:
        registry.get_model("SASRc")
    assert "unknown model 'SASRc'" in str(err.value) and "SASRec" in str(err.value)
    with pytest.raises(ConfigError, match="did you mean BPR"):
        registry.get_model("bpr")


def test_available_models_lists_both_sources():
    models = registry.available_models()
    assert {"SASRec", "BPR", "LightGCN", "ItemKNN"} <= set(models["recbole"])
    # Pop is ours (exact counts, mmrecbole/model/general_recommender/pop.py) and shadows RecBole's.
    assert "Pop" in models["mmrecbole"] and "Pop" not in models["recbole"]
    assert registry.get_model("Pop").__module__.startswith("mmrecbole.")
    assert "LightGBM" not in models["recbole"]  # exlib models are not exposed


def test_trainers_use_safe_checkpoints():
    from recbole.utils import ModelType

    for model_type, name in [(ModelType.GENERAL, "BPR"), (ModelType.TRADITIONAL, "Pop"),
                             (ModelType.SEQUENTIAL, "SASRec")]:
        trainer = registry.get_trainer(model_type, name)
        assert issubclass(trainer, compat.SafeCheckpointMixin)
    assert registry.get_trainer(ModelType.TRADITIONAL, "ItemKNN").__mro__[2].__name__ == "TraditionalTrainer"
    assert registry.get_trainer(ModelType.TRADITIONAL, "Pop").__mro__[2].__name__ == "FitOnceTrainer"  # ours


def test_importing_recbole_sequential_models_leaves_anomaly_detection_off():
    registry.get_model("SINE")  # sine.py switches anomaly detection on at import
    assert not torch.is_anomaly_enabled()


def test_model_can_name_its_trainer(monkeypatch):
    import mmrecbole.trainer as our_trainers
    from recbole.trainer import Trainer

    class FitOnce(Trainer):
        pass

    class Declares(RecBoleBPR):
        trainer_name = "FitOnce"

    Declares.__module__ = "mmrecbole.model.general_recommender.declares"
    monkeypatch.setattr(our_general, "Declares", Declares, raising=False)
    monkeypatch.setattr(our_trainers, "FitOnce", FitOnce, raising=False)
    trainer = registry.get_trainer(Declares.type, "Declares")
    assert issubclass(trainer, FitOnce) and issubclass(trainer, compat.SafeCheckpointMixin)
