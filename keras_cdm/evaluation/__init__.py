"""Evaluation: feature statistics, FID, IS, precision/recall and CAS."""

from keras_cdm.evaluation.classifier import classifier_extractor
from keras_cdm.evaluation.classifier import fit_classifier
from keras_cdm.evaluation.classifier import small_classifier
from keras_cdm.evaluation.evaluator import classification_accuracy_score
from keras_cdm.evaluation.evaluator import evaluate_samples
from keras_cdm.evaluation.evaluator import feature_statistics
from keras_cdm.evaluation.features import FeatureExtractor
from keras_cdm.evaluation.features import inception_v3
from keras_cdm.evaluation.metrics import classification_accuracy
from keras_cdm.evaluation.metrics import frechet_distance
from keras_cdm.evaluation.metrics import inception_score
from keras_cdm.evaluation.metrics import precision_recall
from keras_cdm.evaluation.statistics import RunningStatistics
from keras_cdm.evaluation.statistics import load_statistics

__all__ = [
    "FeatureExtractor",
    "RunningStatistics",
    "classification_accuracy",
    "classification_accuracy_score",
    "classifier_extractor",
    "evaluate_samples",
    "feature_statistics",
    "fit_classifier",
    "frechet_distance",
    "inception_score",
    "inception_v3",
    "load_statistics",
    "precision_recall",
    "small_classifier",
]
