"""imbalanced-learn's own sampler checks: our over-samplers pass every one that its SMOTE passes,
so they behave as its samplers do in pipelines (validation, data frames, lists, one-vs-all
targets, sparse input, parameter errors).

The checks are called one by one: imbalanced-learn's check generator fails on scikit-learn 1.9's
tags.
"""

from __future__ import annotations

from imblearn.over_sampling import SMOTE
from imblearn.utils import estimator_checks
import pytest

from jimb.generative.oversampler import GANOverSampler
from jimb.resampling.qc_smote import QCSMOTE
from jimb.resampling.samplers import DuplicateCeilMultiple, DuplicateToMax, DuplicateToMinimum
from jimb.resampling.smote_jax import JaxSMOTE

SAMPLERS = {
    "SMOTE": SMOTE(random_state=0),   # the reference
    "JaxSMOTE": JaxSMOTE(random_state=0),
    "QCSMOTE": QCSMOTE(random_state=0),
    "DuplicateToMax": DuplicateToMax(random_state=0),
    "DuplicateToMinimum": DuplicateToMinimum(random_state=0),
    "DuplicateCeilMultiple": DuplicateCeilMultiple(),
    "GANOverSampler": GANOverSampler(steps=2, hidden=(8,), latent_dim=4, batch_size=8,
                                     random_state=0),
}
# Every check of imbalanced-learn's that SMOTE passes.
CHECKS = (
    "check_target_type", "check_samplers_one_label", "check_samplers_fit",
    "check_samplers_fit_resample", "check_samplers_sampling_strategy_fit_resample",
    "check_samplers_sparse", "check_samplers_pandas", "check_samplers_pandas_sparse",
    "check_samplers_list", "check_samplers_multiclass_ova", "check_samplers_2d_target",
    "check_samplers_preserve_dtype", "check_samplers_sample_indices", "check_param_validation",
    "check_dataframe_column_names_consistency", "check_sampler_get_feature_names_out",
    "check_sampler_get_feature_names_out_pandas",
    "check_classifier_on_multilabel_or_multioutput_targets",
)
# The rest, which SMOTE fails: a classifier's check, and values it refuses.
SMOTE_FAILS = ("check_classifiers_with_encoded_labels", "check_samplers_nan",
               "check_samplers_string")
# Duplication only copies rows, so it takes any values, as RandomOverSampler does.
ANY_VALUES = ("check_samplers_nan", "check_samplers_string")
DUPLICATION = ("DuplicateToMax", "DuplicateToMinimum", "DuplicateCeilMultiple")


def _cases():
  for sampler in SAMPLERS:
    for check in CHECKS + (ANY_VALUES if sampler in DUPLICATION else ()):
      yield pytest.param(sampler, check, id=f"{sampler}-{check}")


@pytest.mark.parametrize("sampler, check", list(_cases()))
def test_passes_imbalanced_learns_check(sampler, check):
  getattr(estimator_checks, check)(type(SAMPLERS[sampler]).__name__, SAMPLERS[sampler])


def test_the_checks_are_all_that_smote_passes():
  names = {name for name in dir(estimator_checks) if name.startswith("check_")}
  assert names == set(CHECKS) | set(SMOTE_FAILS)
  for check in SMOTE_FAILS:
    with pytest.raises((AttributeError, ValueError)):
      getattr(estimator_checks, check)("SMOTE", SAMPLERS["SMOTE"])
