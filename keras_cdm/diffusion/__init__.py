"""Diffusion math: schedules, the Gaussian process, respacing, likelihoods,
and the reverse-process solvers (plug-ins, `register_solver`)."""

from keras_cdm.diffusion.gaussian_diffusion import GaussianDiffusion
from keras_cdm.diffusion.respacing import space_timesteps
from keras_cdm.diffusion.schedules import get_beta_schedule
from keras_cdm.diffusion.solvers import Solver
from keras_cdm.diffusion.solvers import get_solver
from keras_cdm.diffusion.solvers import register_solver
from keras_cdm.diffusion.solvers import solver_names

__all__ = [
    "GaussianDiffusion",
    "Solver",
    "get_beta_schedule",
    "get_solver",
    "register_solver",
    "solver_names",
    "space_timesteps",
]
