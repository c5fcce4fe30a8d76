"""Reverse-process solvers as plug-ins: one class each, registered by name.

A solver turns the network's output at step `t` of a (respaced)
`GaussianDiffusion` into the sample at `t - 1`. The stage's sampling loop
(`keras_cdm.models.StageSampler`) knows none by name: it builds the
registered class, asks it for its initial state and whether a step needs
fresh noise, and calls `step` once per step inside the compiled step.

Adding a solver is one class:

```python
@keras_cdm.diffusion.register_solver
class MySolver(keras_cdm.diffusion.Solver):
    name = "my_solver"

    def step(self, model_output, x_t, t, first, state, noise):
        out = self.diffusion.p_mean_variance(model_output, x_t, t, self.clip_denoised)
        return out["mean"], state
```

after which `SamplerSettings(sampler="my_solver")`, `sample(...,
sampler="my_solver")` and the recipes' `--sampler my_solver` use it.
"""

from keras import ops

SOLVERS = {}


def register_solver(cls):
    """Class decorator: makes a `Solver` subclass available by its `name`."""
    if not (isinstance(cls, type) and issubclass(cls, Solver)):
        raise ValueError(f"register_solver takes a Solver subclass. Received: {cls!r}")
    if not isinstance(cls.name, str) or not cls.name:
        raise ValueError(f"A solver needs a `name`. Received: {cls.__name__}.name={cls.name!r}")
    if SOLVERS.get(cls.name, cls) is not cls:
        raise ValueError(
            f"A solver named {cls.name!r} is already registered ({SOLVERS[cls.name].__name__})."
        )
    SOLVERS[cls.name] = cls
    return cls


def solver_names():
    """The registered solvers' names, in registration order."""
    return tuple(SOLVERS)


def get_solver(name):
    """The registered `Solver` class called `name`."""
    if name not in SOLVERS:
        raise ValueError(
            f"Unknown sampler {name!r}: the registered ones are {solver_names()} "
            "(keras_cdm.diffusion.register_solver adds one)."
        )
    return SOLVERS[name]


class Solver:
    """One reverse-process solver on a (respaced) `GaussianDiffusion`.

    Subclasses set `name` (and `takes_eta` if DDIM's `eta` applies, and
    `order` above 1 for a higher-order one), and implement `step`; a multistep solver also `initial_state`, the tensors
    it carries from step to step; a stochastic one sets `stochastic = True`.

    Args:
        diffusion: the `keras_cdm.GaussianDiffusion` the loop walks (its
            `t` are the respaced steps).
        eta: float. DDIM's stochasticity; only for solvers with `takes_eta`.
        clip_denoised: bool. Clip the predicted x0 to [-1, 1].

    Example:

    >>> diffusion = keras_cdm.GaussianDiffusion(num_timesteps=10)
    >>> solver = keras_cdm.diffusion.get_solver("ddim")(diffusion, eta=0.0)
    >>> x = keras.ops.zeros((1, 4, 4, 3))
    >>> x_prev, state = solver.step(keras.ops.zeros((1, 4, 4, 3)), x,
    ...     keras.ops.array([9]), 1.0, solver.initial_state(x), None)
    >>> solver.draws_noise
    False
    """

    name = None
    takes_eta = False
    stochastic = False  # draws fresh noise every step
    order = 1  # the local order of accuracy in the step size (a multistep solver's full order)

    def __init__(self, diffusion, eta=0.0, clip_denoised=True):
        if eta and not self.takes_eta:
            raise ValueError(
                f"`eta` is DDIM's stochasticity; sampler={self.name!r} takes none. "
                f"Received: eta={eta!r}"
            )
        self.diffusion = diffusion
        self.eta = float(eta)
        self.clip_denoised = clip_denoised

    @property
    def draws_noise(self):
        """Whether `step` needs a standard-normal `noise` like `x_t` (the
        class's `stochastic`)."""
        return self.stochastic

    def initial_state(self, x):
        """The tensors carried between steps, before the first (a tuple)."""
        return ()

    def predict(self, model_output, x_t, t):
        """`(x0, x_t, ᾱ_t, ᾱ_{t−1})`: the predicted x0 (clipped if
        `clip_denoised`), `x_t` in float32 and the respaced schedule's ᾱ at
        `t` and `t − 1` (1 below the grid), shaped to broadcast over `x_t`."""
        d = self.diffusion
        x0 = d.p_mean_variance(model_output, x_t, t, self.clip_denoised)["pred_x0"]
        x_t = ops.cast(x_t, "float32")
        a = d._extract(d.alphas_cumprod, t, x_t)
        return x0, x_t, a, d._extract(d.alphas_cumprod_prev, t, x_t)

    def step(self, model_output, x_t, t, first, state, noise):
        """One step x_t → x_{t-1}.

        Args:
            model_output: the network's output at `(x_t, t)` (guided).
            x_t: the current sample.
            t: int32 `(batch,)` respaced timesteps.
            first: float32 scalar, 1 at the loop's first step and 0 after.
            state: what the previous step returned (`initial_state` first).
            noise: standard normal like `x_t` if `draws_noise`, else None.

        Returns:
            `(x_prev, state)`.
        """
        raise NotImplementedError


@register_solver
class DDPM(Solver):
    """Ancestral sampling (Ho et al. 2020): the posterior mean plus noise."""

    name = "ddpm"

    stochastic = True

    def step(self, model_output, x_t, t, first, state, noise):
        x_prev, _ = self.diffusion.p_sample_step(model_output, x_t, t, noise, self.clip_denoised)
        return x_prev, state


@register_solver
class DDIM(Solver):
    """DDIM (Song et al. 2021); `eta > 0` adds noise (`eta = 1`: DDPM-like)."""

    name = "ddim"
    takes_eta = True

    @property
    def draws_noise(self):
        return self.eta > 0

    def step(self, model_output, x_t, t, first, state, noise):
        if noise is None:
            noise = ops.zeros_like(x_t)
        x_prev, _ = self.diffusion.ddim_step(
            model_output, x_t, t, noise, self.eta, self.clip_denoised
        )
        return x_prev, state


@register_solver
class DPMSolverPP2M(Solver):
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv:2211.01095): deterministic,
    second-order multistep; carries the previous step's x0 prediction."""

    name = "dpm++2m"
    order = 2

    def initial_state(self, x):
        return (ops.zeros_like(ops.cast(x, "float32")),)

    def step(self, model_output, x_t, t, first, state, noise):
        (prev_x0,) = state
        x_prev, x0 = self.diffusion.dpm_solver_2m_step(
            model_output, x_t, t, prev_x0, 1.0 - first, self.clip_denoised, noise
        )
        return x_prev, (x0,)


@register_solver
class SDEDPMSolverPP2M(DPMSolverPP2M):
    """SDE-DPM-Solver++(2M): the stochastic form, fresh noise every step."""

    name = "dpm++2m_sde"
    stochastic = True


@register_solver
class SDEDPMSolverPP3M(Solver):
    """SDE-DPM-Solver++(3M): third-order multistep, stochastic (Lu et al.
    2022, arXiv:2211.01095, the multistep data-prediction solver with the
    SDE's noise, as k-diffusion's `sample_dpmpp_3m_sde` at η = 1).

    With α = √ᾱ, σ = √(1 − ᾱ), λ = log(α/σ), the step h = λ_{t−1} − λ_t
    and the two steps before it h₁, h₂ (carried in the state with the x0
    predictions D₁, D₂ at those steps):

        x_{t−1} = (α_{t−1}/α_t) e^{−2h} x_t + α_{t−1} (1 − e^{−2h}) D
                  + α_{t−1} (φ₂ d₁ − φ₃ d₂) + σ_{t−1} √(1 − e^{−2h}) z,

    φ₂ = 1 − (1 − e^{−2h}) / 2h, φ₃ = φ₂ / 2h − ½; d₁, d₂ the first and
    second divided differences of D over λ (d₂ = 0 with one earlier
    prediction, d₁ = d₂ = 0 at the first step). The last step (σ = 0) lands
    on the predicted x0. Use it with `spacing="quadratic"`: on uniform steps
    of the cosine schedule the first steps span several units of λ, and a
    third-order extrapolation over them overshoots.
    """

    name = "dpm++3m_sde"
    order = 3

    stochastic = True

    def initial_state(self, x):
        zeros = ops.zeros_like(ops.cast(x, "float32"))
        ones = ops.ones((ops.shape(x)[0], 1, 1, 1), "float32")
        return (zeros, zeros, ones, ones, ops.zeros((), "float32"))

    def step(self, model_output, x_t, t, first, state, noise):
        x0_1, x0_2, h_1, h_2, count = state
        x0, x_t, a, a_prev = self.predict(model_output, x_t, t)
        last = a_prev >= 1.0  # σ_{t−1} = 0: the step to the data
        a_prev_safe = ops.where(last, 0.5, a_prev)
        lam = 0.5 * (ops.log(a) - ops.log(1.0 - a))
        h = 0.5 * (ops.log(a_prev_safe) - ops.log(1.0 - a_prev_safe)) - lam
        h = ops.where(last, 1.0, h)
        e = ops.exp(-2.0 * h)
        phi_2 = 1.0 - (1.0 - e) / (2.0 * h)
        phi_3 = phi_2 / (2.0 * h) - 0.5
        has_1 = ops.cast(count >= 1.0, "float32")
        has_2 = ops.cast(count >= 2.0, "float32")
        r0 = ops.where(has_1 > 0, h_1 / h, 1.0)
        r1 = ops.where(has_2 > 0, h_2 / h, 1.0)
        d1_0 = (x0 - x0_1) / r0
        d1_1 = (x0_1 - x0_2) / r1
        d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        correction = has_2 * (phi_2 * d1 - phi_3 * d2) + (has_1 - has_2) * phi_2 * d1_0
        alpha_prev = ops.sqrt(a_prev_safe)
        x_prev = (
            alpha_prev / ops.sqrt(a) * e * x_t
            + alpha_prev * ((1.0 - e) * x0 + correction)
            + ops.sqrt(1.0 - a_prev_safe) * ops.sqrt(1.0 - e) * ops.cast(noise, "float32")
        )
        x_prev = ops.where(last, x0, x_prev)
        state = (x0, x0_1, h, h_1, ops.minimum(count + 1.0, 2.0))
        return x_prev, state


@register_solver
class EulerAncestral(Solver):
    """Euler ancestral (k-diffusion's `sample_euler_ancestral` at η = 1,
    the sampler of Karras et al. 2022's Table 1 baselines): an Euler step
    of the probability-flow ODE in σ = √((1 − ᾱ)/ᾱ) down to σ_down, then
    fresh noise up to σ_{t−1}.

    With x = x_t/√ᾱ_t, D the predicted x0,
    σ_up = min(σ_{t−1}, σ_{t−1} √(σ_t² − σ_{t−1}²)/σ_t) and
    σ_down = √(σ_{t−1}² − σ_up²):

        x_{t−1} = √ᾱ_{t−1} (x + (x − D)(σ_down − σ_t)/σ_t + σ_up z).

    The last step (σ_{t−1} = 0) lands on D.
    """

    name = "euler_a"

    stochastic = True

    def step(self, model_output, x_t, t, first, state, noise):
        x0, x_t, a, a_prev = self.predict(model_output, x_t, t)
        sigma = ops.sqrt((1.0 - a) / a)
        sigma_next = ops.sqrt((1.0 - a_prev) / a_prev)
        sigma_up = ops.minimum(
            sigma_next, sigma_next * ops.sqrt(ops.maximum(sigma**2 - sigma_next**2, 0.0)) / sigma
        )
        sigma_down = ops.sqrt(ops.maximum(sigma_next**2 - sigma_up**2, 0.0))
        x = x_t / ops.sqrt(a)
        x = x + (x - x0) * (sigma_down - sigma) / sigma + sigma_up * ops.cast(noise, "float32")
        return ops.sqrt(a_prev) * x, state


@register_solver
class DDIMRenoise(Solver):
    """Stochastic sampling of a distilled student (Meng et al., CVPR 2023,
    arXiv:2210.03142, §4.3): a deterministic DDIM step of twice the step
    size, t → t − 2, then fresh forward noise back up to t − 1, so each
    network call still advances one step. With ᾱ the respaced schedule,
    D the predicted x0 and ε̂ = (x_t − √ᾱ_t D)/√(1 − ᾱ_t):

        x_{t−2} = √ᾱ_{t−2} D + √(1 − ᾱ_{t−2}) ε̂,
        x_{t−1} = √(ᾱ_{t−1}/ᾱ_{t−2}) x_{t−2} + √(1 − ᾱ_{t−1}/ᾱ_{t−2}) z,

    with ᾱ = 1 below the grid, so the last step lands on D. It visits only
    the grid's own timesteps: a student distilled to N steps samples with it
    in N calls. Any stage can use it (with 2 steps it is DDIM to x0 and one
    step of forward noise). Measured on this project's CIFAR-10 students
    (1,000 training steps per round) it was far worse than their own DDIM
    (FID 9.15 against 3.10 at 8 steps; docs/RESULTS.md): a student asked for
    jumps of two of its steps has not learned them.
    """

    name = "ddim_renoise"

    stochastic = True

    def step(self, model_output, x_t, t, first, state, noise):
        x0, x_t, a, a_prev = self.predict(model_output, x_t, t)
        d = self.diffusion  # ᾱ_{t−2} is ᾱ_prev at t − 1 (1 below the grid)
        a_2 = d._extract(d.alphas_cumprod_prev, ops.maximum(t - 1, 0), x_t)
        eps = (x_t - ops.sqrt(a) * x0) / ops.sqrt(1.0 - a)
        x_2 = ops.sqrt(a_2) * x0 + ops.sqrt(1.0 - a_2) * eps
        ratio = ops.minimum(a_prev / a_2, 1.0)
        x_prev = ops.sqrt(ratio) * x_2 + ops.sqrt(1.0 - ratio) * ops.cast(noise, "float32")
        return x_prev, state
