"""Registry: ours first, RecBole's as fallback, helpful unknown-name errors."""
import pytest
import torch
from recbole.model.general_recommender import BPR as RecBoleBPR

import mmrecbole.model.general_recommender as our_general
from mmrecbole import registry
from mmrecbole.errors import ConfigError
from mmrecbole.contract import ModelContract
from mmrecbole.trainer import FitOnceTrainer, MMTrainer, TrainingMixin, trainer_class


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


def test_every_trainer_is_ours_over_recbole_and_one_class_per_base():
    from recbole.trainer import TraditionalTrainer, Trainer
    from recbole.utils import ModelType

    for model_type, name in [(ModelType.GENERAL, "BPR"), (ModelType.TRADITIONAL, "Pop"),
                             (ModelType.SEQUENTIAL, "SASRec"), (ModelType.TRADITIONAL, "ItemKNN")]:
        trainer = trainer_class(model_type, name)
        assert issubclass(trainer, TrainingMixin) and trainer.__mro__[1] is TrainingMixin
    assert trainer_class(ModelType.GENERAL, "BPR") is MMTrainer and MMTrainer.__mro__[2] is Trainer
    assert trainer_class(ModelType.TRADITIONAL, "ItemKNN").__mro__[2] is TraditionalTrainer  # RecBole's choice
    assert trainer_class(ModelType.TRADITIONAL, "ItemKNN") is trainer_class(ModelType.TRADITIONAL, "ItemKNN")
    assert trainer_class(ModelType.TRADITIONAL, "Pop") is FitOnceTrainer  # ours declares it


def test_importing_recbole_sequential_models_leaves_anomaly_detection_off():
    registry.get_model("SINE")  # sine.py switches anomaly detection on at import
    assert not torch.is_anomaly_enabled()


def test_model_names_its_trainer_through_the_contract(monkeypatch):
    class Declares(RecBoleBPR, ModelContract):
        trainer_name = "FitOnceTrainer"

    class Misnames(RecBoleBPR, ModelContract):
        trainer_name = "NoSuchTrainer"

    class OnlyAttribute(RecBoleBPR):  # not under the contract: the attribute means nothing
        trainer_name = "FitOnceTrainer"

    for cls in (Declares, Misnames, OnlyAttribute):
        cls.__module__ = "mmrecbole.model.general_recommender.declares"
        monkeypatch.setattr(our_general, cls.__name__, cls, raising=False)
    assert trainer_class(Declares.type, "Declares") is FitOnceTrainer
    assert trainer_class(OnlyAttribute.type, "OnlyAttribute") is MMTrainer
    with pytest.raises(ConfigError, match="asks for trainer 'NoSuchTrainer'"):
        trainer_class(Misnames.type, "Misnames")


def test_every_model_of_ours_follows_the_contract():
    for name, cls in registry.our_models().items():
        assert issubclass(cls, ModelContract), name

