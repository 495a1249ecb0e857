"""Evaluation harness: classifiers, coherence and quality metrics, reference models, reports.

    from muni.evaluation import load_or_train_classifiers, run_evaluation, REFERENCE_MODELS
    test = load_dataset("polymnist-quadrant", "test")
    results = run_evaluation(REFERENCE_MODELS["oracle"](test), "polymnist-quadrant", out_dir="runs/eval")

Every metric is a function outside the models, over a fixed, seed-chosen set of test
conditions, with a confidence interval and, where it applies, its exact chance level.
"""

from muni.evaluation.classifiers import (ClassifierConfig, Classifiers, load_or_train_classifiers,
                                         train_classifiers)
from muni.evaluation.coherence import (TaskResult, chance_all_match, coherence_matrix, condition_indices,
                                       labels_to_modalities, many_to_one, unconditional, wilson)
from muni.evaluation.frechet import diversity, frechet_distance, sample_quality
from muni.evaluation.reference import REFERENCE_MODELS, SANITY_ROWS
from muni.evaluation.report import TASKS, compare_markdown, markdown_report, run_evaluation

__all__ = ["ClassifierConfig", "Classifiers", "REFERENCE_MODELS", "SANITY_ROWS", "TASKS", "TaskResult",
           "chance_all_match", "coherence_matrix", "compare_markdown", "condition_indices", "diversity",
           "frechet_distance", "labels_to_modalities", "load_or_train_classifiers", "many_to_one",
           "markdown_report", "run_evaluation", "sample_quality", "train_classifiers", "unconditional",
           "wilson"]
