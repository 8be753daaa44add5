"""The model contract: what mmrecbole asks of a recommender class beyond RecBole's.

RecBole's part is unchanged: a subclass of one of its recommenders (`GeneralRecommender`, `SequentialRecommender`)
with `__init__(config, dataset)`, `calculate_loss(interaction)`, `predict(interaction)` and
`full_sort_predict(interaction)`. Our models also inherit `ModelContract` and override what applies; everything
else in mmrecbole reads these capabilities through the functions below (RecBole's own models get the defaults),
never by probing attributes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Tuple


class ModelContract:
    """Optional capabilities of a model class, with their defaults.

    Class attributes:
      trainer_name: the trainer in mmrecbole.trainer.TRAINERS that fits this model ("MMTrainer" for gradient
          training, "FitOnceTrainer" for models fitted in one pass); None: RecBole's choice for the model type.
      uses_item_content: reads item feature tables (text/image) when `modalities` is non-empty; the pipeline loads
          them before the model is built (mmrecbole.features.attach_item_content) and leaderboards mark such rows.
      supports_all_positions: a sequential model that trains on `train_mode: all_positions` windows
          (mmrecbole.data.windows).
      seed_independent: the fitted model and its scores do not depend on the seed (no random initialisation,
          sampling or order that reaches the result): a leaderboard trains it once and reports that run for every
          seed.
    Instance attributes / methods:
      loss_names: names of the terms when `calculate_loss` returns a tuple (epoch log, TensorBoard).
      pre_epoch(epoch): called before every training epoch (e.g. FREEDOM re-samples its graph).
      fit_from(dataset, show_progress): one-pass models (trainer_name "FitOnceTrainer") fit on the training split.
      fitted_value_count(): for models fitted outside autograd, how many values the fit produced (the "learned
          values" column of a leaderboard); None: count the trainable parameters.
    Serving (mmrecbole.serving; every SequentialRecommender scores a history without any of these):
      history_scores(rows): a general model that can score users it was not trained on from their history: `rows`
          is a scipy CSR matrix [batch, item_num] (1 for each history item, RecBole's item ids); returns float scores
          [batch, item_num]. None (the default): it cannot.
      score_parts(interaction, items): the exact per-source split of the scores of `items` ([batch, k] item ids) for
          the users / sequences of `interaction`: (source names, tensor [batch, k, sources]) whose last axis sums to
          `full_sort_predict`'s score of each item. None: the model has no per-source split.
      prepare_refit(): called by quick_start.refit after the old model's tensors were carried over, before training
          continues (a one-pass model then starts its fit from them instead of from scratch).
      history_attention(interaction): [batch, MAX_ITEM_LIST_LENGTH] weights over the positions of each input
          sequence (summing to 1 over its real items) that the prediction leaned on. None: not available.
    """

    trainer_name: ClassVar[Optional[str]] = None
    uses_item_content: ClassVar[bool] = False
    supports_all_positions: ClassVar[bool] = False
    seed_independent: ClassVar[bool] = False
    loss_names: Tuple[str, ...] = ()

    def pre_epoch(self, epoch: int) -> None:
        """Hook run before each training epoch; nothing by default."""

    def fitted_value_count(self) -> Optional[int]:
        return None

    def history_scores(self, rows):
        return None

    def prepare_refit(self) -> None:
        """Nothing by default: gradient training continues from the carried-over tensors anyway."""

    def score_parts(self, interaction, items):
        return None

    def history_attention(self, interaction):
        return None


@dataclass(frozen=True)
class Capabilities:
    trainer_name: Optional[str]
    uses_item_content: bool
    supports_all_positions: bool
    seed_independent: bool = False

    @property
    def fits_once(self) -> bool:
        return self.trainer_name == "FitOnceTrainer"


def follows_contract(model_class) -> bool:
    return isinstance(model_class, type) and issubclass(model_class, ModelContract)


#: RecBole models whose result does not depend on the seed: ItemKNN (item-item similarities of the training matrix,
#: computed when the model is built; equal test metrics over 3 seeds on every committed board). RecBole's own Pop is
#: seed-dependent (mmrecbole.model.general_recommender.pop says why); ours, which replaces it, declares itself.
RECBOLE_SEED_INDEPENDENT = frozenset({"ItemKNN"})


def capabilities(model_class) -> Capabilities:
    """The declared capabilities of a model class (the defaults for RecBole's own models)."""
    if not follows_contract(model_class):
        return Capabilities(None, False, False,
                            seed_independent=getattr(model_class, "__name__", "") in RECBOLE_SEED_INDEPENDENT)
    return Capabilities(trainer_name=model_class.trainer_name,
                        uses_item_content=bool(model_class.uses_item_content),
                        supports_all_positions=bool(model_class.supports_all_positions),
                        seed_independent=bool(model_class.seed_independent))


def reads_item_content(config) -> bool:
    """Whether the model of `config` reads feature tables with these settings (a content model with modalities)."""
    return capabilities(config.model_class).uses_item_content and bool(config["modalities"])


def loss_names(model) -> Tuple[str, ...]:
    return tuple(model.loss_names) if isinstance(model, ModelContract) else ()


def run_pre_epoch(model, epoch: int) -> None:
    if isinstance(model, ModelContract):
        model.pre_epoch(epoch)


def learned_value_count(model) -> int:
    """What a run learned, in numbers: trainable tensor elements, or, for a model fitted outside autograd (implicit's
    factors and neighbour lists), the values its fit produced."""
    fitted = model.fitted_value_count() if isinstance(model, ModelContract) else None
    if fitted is not None:
        return int(fitted)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def scores_histories(model) -> bool:
    """Whether a general model implements ModelContract.history_scores (scores users unknown to it)."""
    return isinstance(model, ModelContract) and type(model).history_scores is not ModelContract.history_scores


def history_scores(model, rows):
    """Scores [batch, item_num] of a general model for history rows (see ModelContract.history_scores), or None."""
    return model.history_scores(rows) if isinstance(model, ModelContract) else None


def score_parts(model, interaction, items):
    """(source names, per-source score parts [batch, k, sources]) of `items`, or None (ModelContract.score_parts)."""
    return model.score_parts(interaction, items) if isinstance(model, ModelContract) else None


def history_attention(model, interaction):
    """Attention weights over each input sequence's positions [batch, length], or None."""
    return model.history_attention(interaction) if isinstance(model, ModelContract) else None


def prepare_refit(model) -> None:
    if isinstance(model, ModelContract):
        model.prepare_refit()
