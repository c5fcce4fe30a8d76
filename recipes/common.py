"""Shared code of the keras_cdm recipes. Each `train_*.py` recipe is a stage
name plus a call to `main`. Importing this module first puts the repository
on the path and checks the Keras backend before Keras loads (a bad
`KERAS_BACKEND` is one line, exit 2); the code lives in three modules:

- `recipe_flags`: flag types, the training and sampling flags, refusals;
- `run_state`: the stage built or resumed, the run record, the resume command;
- `training_loop`: data, checkpoints, signals, `train` and `main`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

try:
    import keras_cdm  # noqa: F401, E402  (checks the Keras backend before Keras loads it)
except ImportError as e:
    if type(e).__name__ != "BackendError":
        raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)

from recipe_flags import NETWORK_KEYS  # noqa: E402, F401
from recipe_flags import NON_NEGATIVE_FLOAT  # noqa: E402, F401
from recipe_flags import NON_NEGATIVE_INT  # noqa: E402, F401
from recipe_flags import NOT_SAMPLING_FLAGS  # noqa: E402, F401
from recipe_flags import POSITIVE_FLOAT  # noqa: E402, F401
from recipe_flags import POSITIVE_INT  # noqa: E402, F401
from recipe_flags import SAMPLING_FLAGS  # noqa: E402, F401
from recipe_flags import TRAINING_FLAGS  # noqa: E402, F401
from recipe_flags import UNIT_INTERVAL  # noqa: E402, F401
from recipe_flags import CheckpointExists  # noqa: E402, F401
from recipe_flags import FlagError  # noqa: E402, F401
from recipe_flags import NoCheckpoint  # noqa: E402, F401
from recipe_flags import RecipeError  # noqa: E402, F401
from recipe_flags import ResumeRefused  # noqa: E402, F401
from recipe_flags import StageError  # noqa: E402, F401
from recipe_flags import TrainingOptions  # noqa: E402, F401
from recipe_flags import Unsupported  # noqa: E402, F401
from recipe_flags import add_sampling_flags  # noqa: E402, F401
from recipe_flags import cli  # noqa: E402, F401
from recipe_flags import parse_args  # noqa: E402, F401
from recipe_flags import per_stage_flag  # noqa: E402, F401
from recipe_flags import sampling_kwargs  # noqa: E402, F401
from recipe_flags import stage_settings  # noqa: E402, F401
from recipe_flags import stage_settings_from_flags  # noqa: E402, F401
from run_state import RUN_KEYS  # noqa: E402, F401
from run_state import build_model  # noqa: E402, F401
from run_state import check_resumed_model  # noqa: E402, F401
from run_state import check_run_record  # noqa: E402, F401
from run_state import current_step  # noqa: E402, F401
from run_state import load_or_build  # noqa: E402, F401
from run_state import paper_preset_note  # noqa: E402, F401
from run_state import read_run_record  # noqa: E402, F401
from run_state import resume_command  # noqa: E402, F401
from run_state import run_record  # noqa: E402, F401
from run_state import write_json  # noqa: E402, F401
from training_loop import Checkpoint  # noqa: E402, F401
from training_loop import StopAtStep  # noqa: E402, F401
from training_loop import build_dataset  # noqa: E402, F401
from training_loop import fit_to_step  # noqa: E402, F401
from training_loop import grid_low_res  # noqa: E402, F401
from training_loop import main  # noqa: E402, F401
from training_loop import open_source  # noqa: E402, F401
from training_loop import recipe_signal_stop  # noqa: E402, F401
from training_loop import save_collectively  # noqa: E402, F401
from training_loop import set_steps_per_execution  # noqa: E402, F401
from training_loop import train  # noqa: E402, F401
from training_loop import write_sample_grid  # noqa: E402, F401
