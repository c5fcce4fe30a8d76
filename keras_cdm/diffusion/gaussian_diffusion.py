"""The Gaussian diffusion process: tables, posteriors, parameterisations,
losses and single reverse steps. The math never calls a network."""

import math

import numpy as np
from keras import ops

from keras_cdm.backend import lookup_table
from keras_cdm.diffusion.likelihoods import discretized_gaussian_log_likelihood
from keras_cdm.diffusion.likelihoods import normal_kl
from keras_cdm.diffusion.respacing import space_timesteps
from keras_cdm.diffusion.schedules import get_beta_schedule

MEAN_TYPES = ("epsilon", "x0", "v")
VAR_TYPES = ("fixed_small", "fixed_large", "learned_range")
LOSS_TYPES = ("simple", "hybrid")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}. Received: {name}={value!r}")


class GaussianDiffusion:
    """A discrete-time Gaussian diffusion over `T` steps (0-indexed, `t = 0`
    is the least noisy step, as in Improved DDPM's code).

    Holds float64 NumPy tables (`betas`, `alphas_cumprod`, posterior
    coefficients, ...) and turns them into tensors of the input's dtype when a
    method indexes them with a batch of timesteps, so every method works on
    JAX, TensorFlow and PyTorch, eagerly and inside compiled functions.

    Args:
        schedule: str. Name of the beta schedule (`"linear"` or `"cosine"`).
            Defaults to `"cosine"`.
        num_timesteps: int. Number of diffusion steps `T`. Defaults to `1000`.
        mean_type: str. What the network predicts: `"epsilon"`, `"x0"` or
            `"v"`. Defaults to `"epsilon"`.
        var_type: str. `"fixed_small"` (posterior variance β̃_t),
            `"fixed_large"` (β_t) or `"learned_range"` (the network's second
            half of channels interpolates log β̃_t and log β_t). Defaults to
            `"fixed_small"`.
        loss_type: str. `"simple"` (MSE on the mean target) or `"hybrid"`
            (simple + λ·L_vb, λ = 0.001, needs `"learned_range"`). Defaults
            to `"simple"`.
        timesteps: optional int array. The original timesteps this diffusion
            keeps (set by `respace`); `None` keeps them all.

    Example:

    >>> diffusion = keras_cdm.GaussianDiffusion("cosine", 4000)
    >>> x0 = keras.random.uniform((2, 8, 8, 3), -1, 1)
    >>> t = keras.ops.array([0, 3999])
    >>> x_t = diffusion.q_sample(x0, t, keras.random.normal(x0.shape))
    >>> fast = diffusion.respace(100)  # 100 evenly spaced steps

    References:
        - DDPM, arXiv:2006.11239.
        - Improved DDPM, arXiv:2102.09672.
        - DDIM, arXiv:2010.02502.
        - CDM, arXiv:2106.15282.
    """

    def __init__(
        self,
        schedule="cosine",
        num_timesteps=1000,
        mean_type="epsilon",
        var_type="fixed_small",
        loss_type="simple",
        timesteps=None,
    ):
        _check_choice("mean_type", mean_type, MEAN_TYPES)
        _check_choice("var_type", var_type, VAR_TYPES)
        _check_choice("loss_type", loss_type, LOSS_TYPES)
        if loss_type == "hybrid" and var_type != "learned_range":
            raise ValueError(
                "The hybrid loss trains the variance, so it needs "
                "var_type='learned_range'. "
                f"Received: loss_type={loss_type!r}, var_type={var_type!r}"
            )
        self.schedule = schedule
        self.original_num_timesteps = num_timesteps
        self.mean_type = mean_type
        self.var_type = var_type
        self.loss_type = loss_type
        base_betas = get_beta_schedule(schedule, num_timesteps)
        base_alphas_cumprod = np.cumprod(1.0 - base_betas)
        if timesteps is None:
            self.timestep_map = np.arange(num_timesteps, dtype=np.int64)
            betas = base_betas
        else:
            timesteps = np.asarray(timesteps, dtype=np.int64)
            if (
                timesteps.ndim != 1
                or timesteps.size == 0
                or np.any(np.diff(timesteps) <= 0)
                or timesteps[0] < 0
                or timesteps[-1] >= num_timesteps
            ):
                raise ValueError(
                    "`timesteps` must be a non-empty, strictly increasing list "
                    f"of steps in [0, {num_timesteps}). Received: "
                    f"timesteps={timesteps.tolist()}"
                )
            self.timestep_map = timesteps
            # Respacing keeps ᾱ at the kept steps and rebuilds the betas so that
            # the products of (1 - β) reproduce exactly those ᾱ.
            kept = base_alphas_cumprod[timesteps]
            betas = 1.0 - kept / np.concatenate([[1.0], kept[:-1]])
        self._set_tables(betas)

    def _set_tables(self, betas):
        self.betas = betas = np.asarray(betas, dtype=np.float64)
        self.num_timesteps = len(betas)
        self.alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(self.alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
        self.posterior_variance = (
            betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        # β̃_0 = 0; its log is replaced by log β̃_1, as Improved DDPM does.
        if self.num_timesteps > 1:
            first = self.posterior_variance[1]
        else:
            first = betas[0]
        self.posterior_log_variance_clipped = np.log(np.append(first, self.posterior_variance[1:]))
        self.posterior_mean_coef1 = (
            betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        )
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * np.sqrt(self.alphas) / (1.0 - self.alphas_cumprod)
        )
        self.log_betas = np.log(betas)
        # fixed_large uses β_t, with β̃_1 at t = 0 (as Improved DDPM) so the
        # t = 0 decoder likelihood stays finite.
        self.fixed_large_variance = (
            np.append(self.posterior_variance[1], betas[1:]) if self.num_timesteps > 1 else betas
        )
        # ᾱ indexed by the conditioning-augmentation level s in {0, ..., T}
        # (paper's 1-indexed convention): s = 0 is the clean image.
        self.aug_alphas_cumprod = np.append(1.0, self.alphas_cumprod)
        self._set_dpm_solver_tables()

    def _set_dpm_solver_tables(self):
        """Coefficients of DPM-Solver++(2M) from step t to t - 1 (Lu et al.
        2022, arXiv:2211.01095, Algorithm 2), with α = sqrt(ᾱ), σ =
        sqrt(1 - ᾱ), λ = log(α / σ) and h = λ_{t-1} - λ_t:
        x_{t-1} = (σ_{t-1} / σ_t) x_t + α_{t-1} (1 - e^{-h}) D_t,
        D_t = x0_t + (x0_t - x0_{t+1}) / (2 r_t),  r_t = (λ_t - λ_{t+1}) / h.
        The last step (to ᾱ = 1, σ = 0) is first order, as diffusers'
        `final_sigmas_type="zero"`: there e^{-h} = 0 and x_{-1} = x0_0."""
        alpha, sigma = np.sqrt(self.alphas_cumprod), np.sqrt(1.0 - self.alphas_cumprod)
        alpha_prev = np.sqrt(self.alphas_cumprod_prev)
        sigma_prev = np.sqrt(1.0 - self.alphas_cumprod_prev)
        exp_neg_h = alpha * sigma_prev / (sigma * alpha_prev)  # e^{λ_t - λ_{t-1}}
        self.dpm_coef_x = sigma_prev / sigma
        self.dpm_coef_d = alpha_prev * (1.0 - exp_neg_h)
        # SDE-DPM-Solver++(2M), the stochastic form that diffusers implements
        # as algorithm_type="sde-dpmsolver++" (order 2, midpoint): the same
        # D_t, and
        # x_{t-1} = (σ_{t-1}/σ_t) e^{-h} x_t + α_{t-1} (1 - e^{-2h}) D_t
        #           + σ_{t-1} sqrt(1 - e^{-2h}) z.
        self.dpm_sde_coef_x = sigma_prev / sigma * exp_neg_h
        self.dpm_sde_coef_d = alpha_prev * (1.0 - exp_neg_h**2)
        self.dpm_sde_coef_noise = sigma_prev * np.sqrt(np.maximum(1.0 - exp_neg_h**2, 0.0))
        lam = np.log(alpha) - np.log(sigma)
        with np.errstate(divide="ignore"):
            h = -np.log(exp_neg_h)  # inf at the last step
        h_last = np.append(lam[:-1] - lam[1:], np.nan)  # λ_t - λ_{t+1}
        inv_2r = np.where(np.isfinite(h) & np.isfinite(h_last), h / (2.0 * h_last), 0.0)
        self.dpm_half_inv_r = np.nan_to_num(inv_2r)

    # ------------------------------------------------------------------
    # Configuration and respacing
    # ------------------------------------------------------------------
    def get_config(self):
        return {
            "schedule": self.schedule,
            "num_timesteps": self.original_num_timesteps,
            "mean_type": self.mean_type,
            "var_type": self.var_type,
            "loss_type": self.loss_type,
            "timesteps": None if self.is_full else [int(t) for t in self.timestep_map],
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @property
    def is_full(self):
        return self.num_timesteps == self.original_num_timesteps

    @property
    def learns_variance(self):
        return self.var_type == "learned_range"

    def check_trainable(self, learn_sigma):
        """Refuses to train on this diffusion: a respaced one (respacing is
        for sampling), or one whose variance learning does not match the
        network's (`learn_sigma`)."""
        if not self.is_full:
            raise ValueError(
                "Train on the full diffusion; respacing is for sampling. "
                f"Received a diffusion with {self.num_timesteps} of "
                f"{self.original_num_timesteps} steps."
            )
        if self.learns_variance != learn_sigma:
            raise ValueError(
                "The network must output a variance exactly when the diffusion "
                f"learns it. Received: var_type={self.var_type!r}, "
                f"network learn_sigma={learn_sigma}"
            )

    def respace(self, section_counts=None, timesteps=None):
        """Returns a diffusion over a subset of this one's original steps.

        Args:
            section_counts: int, list of ints or `"ddimN"`; see
                `keras_cdm.space_timesteps`.
            timesteps: optional explicit sorted list of original timesteps.

        The returned diffusion's step `i` corresponds to the original timestep
        `timestep_map[i]`, which is what the network must be given.
        """
        if (section_counts is None) == (timesteps is None):
            raise ValueError(
                "Pass exactly one of `section_counts` and `timesteps`. Received: "
                f"section_counts={section_counts!r}, timesteps={timesteps!r}"
            )
        if timesteps is None:
            timesteps = space_timesteps(self.original_num_timesteps, section_counts)
        config = self.get_config()
        config["timesteps"] = timesteps
        return GaussianDiffusion(**config)

    def original_timesteps(self, t):
        """Maps this diffusion's step indices to the network's timesteps."""
        table = ops.convert_to_tensor(self.timestep_map.astype("int32"))
        return ops.take(table, ops.cast(t, "int32"), axis=0)

    # ------------------------------------------------------------------
    # Indexing helpers
    # ------------------------------------------------------------------
    def _extract(self, table, t, x):
        """Gathers `table[t]` and reshapes it to broadcast against `x`."""
        out = lookup_table(self, table, t, x)
        if out is not None:
            return out
        values = ops.convert_to_tensor(np.asarray(table, np.float32))
        out = ops.take(values, ops.cast(t, "int32"), axis=0)
        out = ops.cast(out, x.dtype)
        return ops.reshape(out, (-1,) + (1,) * (len(x.shape) - 1))

    def check_timesteps(self, t):
        """Raises if concrete timesteps fall outside `[0, num_timesteps)`.

        Only for concrete (eager) values; inside compiled code the caller
        guarantees the range.
        """
        t = np.asarray(ops.convert_to_numpy(t))
        if t.size and (t.min() < 0 or t.max() >= self.num_timesteps):
            raise ValueError(
                f"Timesteps must lie in [0, {self.num_timesteps}). "
                f"Received: t in [{t.min()}, {t.max()}]"
            )

    # ------------------------------------------------------------------
    # Forward process
    # ------------------------------------------------------------------
    def q_mean_variance(self, x0, t):
        """Mean, variance and log-variance of q(x_t | x_0)."""
        mean = self._extract(self.sqrt_alphas_cumprod, t, x0) * x0
        variance = self._extract(1.0 - self.alphas_cumprod, t, x0)
        log_variance = self._extract(self.log_one_minus_alphas_cumprod, t, x0)
        return mean, variance, log_variance

    def q_sample(self, x0, t, noise):
        """Draws x_t ~ q(x_t | x_0) with the given standard-normal `noise`."""
        return (
            self._extract(self.sqrt_alphas_cumprod, t, x0) * x0
            + self._extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def q_sample_augmentation(self, z0, s, noise):
        """Gaussian conditioning augmentation z_s = √ᾱ_s z0 + √(1−ᾱ_s) ε.

        `s` follows the paper's 1-indexed convention, `s` in {0, ..., T}:
        `s = 0` returns `z0` unchanged and `s >= 1` equals `q_sample` at step
        `s - 1` of this (0-indexed) diffusion.
        """
        a = self._extract(self.aug_alphas_cumprod, s, z0)
        return ops.sqrt(a) * z0 + ops.sqrt(1.0 - a) * noise

    def q_posterior_mean_variance(self, x0, x_t, t):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = (
            self._extract(self.posterior_mean_coef1, t, x_t) * x0
            + self._extract(self.posterior_mean_coef2, t, x_t) * x_t
        )
        variance = self._extract(self.posterior_variance, t, x_t)
        log_variance = self._extract(self.posterior_log_variance_clipped, t, x_t)
        return mean, variance, log_variance

    # ------------------------------------------------------------------
    # Parameterisations
    # ------------------------------------------------------------------
    def predict_x0_from_eps(self, x_t, t, eps):
        return (
            self._extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
            - self._extract(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
        )

    def predict_eps_from_x0(self, x_t, t, x0):
        return (self._extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / self._extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t
        )

    def get_v(self, x0, t, eps):
        """The v target √ᾱ_t ε − √(1−ᾱ_t) x0 (Salimans & Ho, 2022)."""
        return (
            self._extract(self.sqrt_alphas_cumprod, t, x0) * eps
            - self._extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * x0
        )

    def predict_x0_from_v(self, x_t, t, v):
        return (
            self._extract(self.sqrt_alphas_cumprod, t, x_t) * x_t
            - self._extract(self.sqrt_one_minus_alphas_cumprod, t, x_t) * v
        )

    def predict_eps_from_v(self, x_t, t, v):
        return (
            self._extract(self.sqrt_one_minus_alphas_cumprod, t, x_t) * x_t
            + self._extract(self.sqrt_alphas_cumprod, t, x_t) * v
        )

    def training_target(self, x0, t, noise):
        """What the network's mean channels regress onto."""
        if self.mean_type == "epsilon":
            return noise
        if self.mean_type == "x0":
            return x0
        return self.get_v(x0, t, noise)

    def split_model_output(self, model_output, channels):
        """Splits the network output into (mean part, variance part or None)."""
        model_output = ops.cast(model_output, "float32")
        if self.learns_variance:
            if model_output.shape[-1] != 2 * channels:
                raise ValueError(
                    "A learned-range variance needs twice the image channels "
                    f"in the network output ({2 * channels}). Received: "
                    f"output shape {tuple(model_output.shape)}"
                )
            return model_output[..., :channels], model_output[..., channels:]
        if model_output.shape[-1] != channels:
            raise ValueError(
                f"Expected a network output with {channels} channels. "
                f"Received: output shape {tuple(model_output.shape)}"
            )
        return model_output, None

    # ------------------------------------------------------------------
    # Reverse process
    # ------------------------------------------------------------------
    def p_mean_variance(self, model_output, x_t, t, clip_denoised=True):
        """Mean and variance of p(x_{t-1} | x_t) from the network output.

        Args:
            model_output: tensor. The network output for `(x_t, t)`; for
                `"learned_range"` its last axis holds the mean prediction then
                the variance interpolation `v` in [-1, 1], mapped as
                log σ² = f log β_t + (1 − f) log β̃_t with f = (v + 1) / 2.
            x_t: tensor. The noisy input, NHWC.
            t: int tensor. This diffusion's step indices, shape `(batch,)`.
            clip_denoised: bool. Clip the predicted x0 to [-1, 1].

        Returns:
            A dict with `mean`, `variance`, `log_variance`, `pred_x0` and
            `pred_eps`.
        """
        x_t = ops.cast(x_t, "float32")
        mean_out, var_out = self.split_model_output(model_output, x_t.shape[-1])
        if self.var_type == "learned_range":
            min_log = self._extract(self.posterior_log_variance_clipped, t, x_t)
            max_log = self._extract(self.log_betas, t, x_t)
            frac = (var_out + 1.0) / 2.0
            log_variance = frac * max_log + (1.0 - frac) * min_log
            variance = ops.exp(log_variance)
        else:
            if self.var_type == "fixed_large":
                table, log_table = self.fixed_large_variance, np.log(self.fixed_large_variance)
            else:
                table, log_table = self.posterior_variance, self.posterior_log_variance_clipped
            variance = self._extract(table, t, x_t) * ops.ones_like(x_t)
            log_variance = self._extract(log_table, t, x_t) * ops.ones_like(x_t)

        if self.mean_type == "epsilon":
            pred_x0 = self.predict_x0_from_eps(x_t, t, mean_out)
        elif self.mean_type == "x0":
            pred_x0 = mean_out
        else:
            pred_x0 = self.predict_x0_from_v(x_t, t, mean_out)
        if clip_denoised:
            pred_x0 = ops.clip(pred_x0, -1.0, 1.0)
        pred_eps = self.predict_eps_from_x0(x_t, t, pred_x0)
        mean, _, _ = self.q_posterior_mean_variance(pred_x0, x_t, t)
        return {
            "mean": mean,
            "variance": variance,
            "log_variance": log_variance,
            "pred_x0": pred_x0,
            "pred_eps": pred_eps,
        }

    def p_sample_step(self, model_output, x_t, t, noise, clip_denoised=True):
        """One ancestral (DDPM) step x_t → x_{t-1}; no noise is added at t = 0.

        Returns:
            `(x_prev, pred_x0)`.
        """
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised)
        nonzero = ops.cast(ops.reshape(t, (-1, 1, 1, 1)) > 0, "float32")
        x_prev = out["mean"] + nonzero * ops.exp(0.5 * out["log_variance"]) * noise
        return x_prev, out["pred_x0"]

    def ddim_step(self, model_output, x_t, t, noise, eta=0.0, clip_denoised=True):
        """One DDIM step x_t → x_{t-1} with stochasticity `eta` (0 = deterministic).

        Returns:
            `(x_prev, pred_x0)`.
        """
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised)
        x_t = ops.cast(x_t, "float32")
        eps = out["pred_eps"]
        alpha_bar = self._extract(self.alphas_cumprod, t, x_t)
        alpha_bar_prev = self._extract(self.alphas_cumprod_prev, t, x_t)
        sigma = (
            eta
            * ops.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar))
            * ops.sqrt(1.0 - alpha_bar / alpha_bar_prev)
        )
        mean = (
            out["pred_x0"] * ops.sqrt(alpha_bar_prev)
            + ops.sqrt(ops.maximum(1.0 - alpha_bar_prev - ops.square(sigma), 0.0)) * eps
        )
        nonzero = ops.cast(ops.reshape(t, (-1, 1, 1, 1)) > 0, "float32")
        return mean + nonzero * sigma * noise, out["pred_x0"]

    def dpm_solver_2m_step(
        self, model_output, x_t, t, prev_x0, second_order, clip_denoised=True, noise=None
    ):
        """One DPM-Solver++(2M) step x_t → x_{t-1} (multistep); deterministic,
        or SDE-DPM-Solver++(2M) when `noise` is given.

        Args:
            prev_x0: the x0 prediction of the step before (at t + 1).
            second_order: float 0 or 1. `0` for the first step, which has
                no previous prediction (a first-order step then).
            noise: standard-normal tensor like `x_t`, or None for the
                deterministic solver.

        Returns:
            `(x_prev, pred_x0)`.
        """
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised)
        x_t = ops.cast(x_t, "float32")
        x0 = out["pred_x0"]
        half_inv_r = self._extract(self.dpm_half_inv_r, t, x_t)
        d = x0 + ops.cast(second_order, "float32") * half_inv_r * (x0 - prev_x0)
        if noise is None:
            coef_x = self._extract(self.dpm_coef_x, t, x_t)
            coef_d = self._extract(self.dpm_coef_d, t, x_t)
            return coef_x * x_t + coef_d * d, x0
        coef_x = self._extract(self.dpm_sde_coef_x, t, x_t)
        coef_d = self._extract(self.dpm_sde_coef_d, t, x_t)
        coef_noise = self._extract(self.dpm_sde_coef_noise, t, x_t)
        return coef_x * x_t + coef_d * d + coef_noise * ops.cast(noise, "float32"), x0

    # ------------------------------------------------------------------
    # Losses
    # ------------------------------------------------------------------
    def vb_terms_bpd(self, model_output, x0, x_t, t, clip_denoised=False):
        """The L_vb term at step `t` per example, in bits per dimension.

        KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) for t > 0 and the
        discretised Gaussian negative log-likelihood of x_0 at t = 0.
        """
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x0, x_t, t)
        out = self.p_mean_variance(model_output, x_t, t, clip_denoised)
        kl = normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])
        kl = ops.mean(kl, axis=(1, 2, 3)) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, out["mean"], 0.5 * out["log_variance"])
        nll = ops.mean(nll, axis=(1, 2, 3)) / math.log(2.0)
        return ops.where(ops.cast(t, "int32") == 0, nll, kl)

    def prior_bpd(self, x0):
        """KL(q(x_T | x_0) || N(0, I)) per example, in bits per dimension."""
        t = ops.full((x0.shape[0],), self.num_timesteps - 1, dtype="int32")
        mean, _, log_var = self.q_mean_variance(x0, t)
        kl = normal_kl(mean, log_var, 0.0, 0.0)
        return ops.mean(kl, axis=(1, 2, 3)) / math.log(2.0)

    def training_losses(self, model_output, x0, x_t, t, noise, vb_weight=0.001):
        """Per-example training losses.

        Returns:
            A dict of `(batch,)` tensors: `loss`, `mse` and `vb` (`vb` is zero
            for the simple loss). The hybrid loss is
            `mse + vb_weight * T * vb_t`: L_vb sums T terms, of which `vb_t`
            is one drawn uniformly, and the mean enters L_vb only through a
            stop-gradient so that L_vb trains the variance alone.
        """
        x0 = ops.cast(x0, "float32")
        mean_out, var_out = self.split_model_output(model_output, x0.shape[-1])
        target = self.training_target(x0, t, noise)
        mse = ops.mean(ops.square(target - mean_out), axis=(1, 2, 3))
        if self.loss_type == "hybrid":
            frozen = ops.concatenate([ops.stop_gradient(mean_out), var_out], axis=-1)
            vb = self.vb_terms_bpd(frozen, x0, x_t, t, clip_denoised=False)
            loss = mse + vb_weight * self.num_timesteps * vb
        else:
            vb = ops.zeros_like(mse)
            loss = mse
        return {"loss": loss, "mse": mse, "vb": vb}
