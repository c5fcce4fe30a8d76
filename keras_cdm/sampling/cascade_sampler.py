import numbers

import numpy as np

from keras_cdm.backend import gather_processes
from keras_cdm.backend import process_group
from keras_cdm.models.loading import resolve_stage
from keras_cdm.models.loading import stage_outline
from keras_cdm.models.super_res_diffusion_model import SuperResDiffusionModel
from keras_cdm.utils.images import to_uint8
from keras_cdm.utils.seeds import check_seed
from keras_cdm.utils.seeds import derive_seed
from keras_cdm.utils.validation import check_positive_int
from keras_cdm.utils.validation import per_stage

MODES = ("truncated", "non_truncated")


def _check_chain(outlines):
    """Stage order and sizes from `(is SR, image size, low-res size)` per stage."""
    if outlines[0][0]:
        raise ValueError("The first stage of a cascade must be a base DiffusionModel.")
    for k in range(1, len(outlines)):
        (_, size, _), (sr, _, low) = outlines[k - 1], outlines[k]
        if not sr:
            raise ValueError(f"Stage {k} must be a SuperResDiffusionModel.")
        if low != size:
            raise ValueError(
                f"Stages do not chain: stage {k - 1} makes {size}x{size} images but stage "
                f"{k} expects {low}x{low} conditioning."
            )


class CascadeSampler:
    """Samples a cascade: a base stage, then super-resolution stages (Algorithm 2).

    Args:
        stages: list of stages (a `keras_cdm.DiffusionModel` then one or more
            `keras_cdm.SuperResDiffusionModel`), `.keras` paths to them,
            preset directories (`model.save_to_preset`) or preset names.
            Files and directories are checked for order and sizes from
            their configs before any weights load.
        aug_levels: int or list with one level `s` per SR stage (paper's
            1-indexed levels; `0` = clean conditioning). Defaults to `0`.
        mode: str. `"truncated"`: the stage below stops its reverse process at
            `s` and hands `z_s` on; `"non_truncated"`: it runs to `z_0`, then
            `z_s ~ q(z_s | z_0)`. Defaults to `"non_truncated"`.
        num_steps: int or list per stage. Respaced steps.
        sampler: str or list per stage. A registered solver (`"ddpm"`,
            `"ddim"`, `"dpm++2m_sde"`, ...; see
            `keras_cdm.models.SamplerSettings`).
        guidance_scale: float or list per stage. `1` disables guidance.
        eta: float or list per stage. DDIM stochasticity.
        clip_denoised: bool or list per stage.
        use_ema: bool or list per stage. Sample with EMA weights.
        spacing: str or list per stage. `"uniform"`, `"quadratic"` or
            `"trailing"` timesteps.
        verbose: bool. Progress bars per stage.
        settings: list of `keras_cdm.models.SamplerSettings` (or None), one
            per stage, instead of the seven arguments above.

    What is not given (None, also inside a per-stage list) is the stage's
    own: its `sampler_settings` (a distilled student's step count, solver
    and grid), else `SamplerSettings`' defaults (all `T` ancestral steps).

    Example:

    >>> base = keras_cdm.DiffusionModel.from_preset("base16_tiny")
    >>> sr = keras_cdm.SuperResDiffusionModel.from_preset("sr16to32_tiny")
    >>> cascade = keras_cdm.CascadeSampler([base, sr], aug_levels=[100],
    ...                                    num_steps=[20, 10])
    >>> images = cascade.sample(labels=[0, 1, 2], seed=0, output="uint8")

    References:
        - CDM, arXiv:2106.15282, Algorithm 2.
    """

    def __init__(
        self,
        stages,
        aug_levels=0,
        mode="non_truncated",
        num_steps=None,
        sampler=None,
        guidance_scale=None,
        eta=None,
        clip_denoised=None,
        use_ema=None,
        spacing=None,
        verbose=False,
        settings=None,
    ):
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
        stages = list(stages)
        if not stages:
            raise ValueError("A cascade needs at least one stage.")
        # Stages given as files or preset directories are checked from their
        # configs first, so a wrong order fails before any weights load.
        outlines = [stage_outline(s) for s in stages]
        if all(o is not None for o in outlines):
            _check_chain(outlines)
        stages = [resolve_stage(s) for s in stages]
        n = len(stages)
        sr = [isinstance(st, SuperResDiffusionModel) for st in stages]
        _check_chain(
            [(s, st.image_size, st.low_res_size if s else None) for s, st in zip(sr, stages)]
        )
        for k in range(1, n):
            lo, hi = stages[k - 1], stages[k]
            if hi.channels != lo.channels:
                raise ValueError(
                    f"Stages do not chain: {lo.channels} channels at stage {k - 1}, "
                    f"{hi.channels} expected by stage {k}."
                )
        # Class-conditional stages share their classes; an unconditional
        # stage (num_classes=0) may sit anywhere and ignores the labels.
        counts = sorted({st.num_classes for st in stages if not st.unconditional})
        if len(counts) > 1:
            raise ValueError(
                "Stages do not chain: the class-conditional stages have different numbers of "
                f"classes {[st.num_classes for st in stages]} (0 = unconditional)."
            )
        self.stages = stages
        self.mode = mode
        self.aug_levels = per_stage("aug_levels", aug_levels, n - 1) if n > 1 else []
        for k, s in enumerate(self.aug_levels):
            sr = stages[k + 1]
            if isinstance(s, bool) or not isinstance(s, numbers.Integral):
                raise ValueError(f"aug_levels[{k}] must be an int level s. Received: {s!r}")
            if not 0 <= int(s) <= sr.low_res_diffusion.num_timesteps:
                raise ValueError(
                    f"aug_levels[{k}] must lie in [0, {sr.low_res_diffusion.num_timesteps}]. "
                    f"Received: {s}"
                )
            if mode == "truncated" and s > 0:
                below = stages[k].diffusion
                ref = sr.low_res_diffusion
                if (below.schedule, below.num_timesteps) != (ref.schedule, ref.num_timesteps):
                    raise ValueError(
                        "Truncated mode hands the stage below's z_s to the next stage, "
                        "so their schedules must agree. Received: stage "
                        f"{k} uses {below.schedule}/{below.num_timesteps}, stage {k + 1} "
                        f"was trained with {ref.schedule}/{ref.num_timesteps}."
                    )
        if settings is None:
            given = dict(
                num_steps=num_steps,
                sampler=sampler,
                guidance_scale=guidance_scale,
                eta=eta,
                clip_denoised=clip_denoised,
                use_ema=use_ema,
                spacing=spacing,
            )
            columns = {k: per_stage(k, v, n) for k, v in given.items() if v is not None}
            settings = [
                stage.resolve_settings(
                    None, **{k: v[i] for k, v in columns.items() if v[i] is not None}
                )
                for i, stage in enumerate(stages)
            ]
        settings = [
            stage.resolve_settings(s)
            for stage, s in zip(stages, per_stage("settings", settings, n))
        ]
        for k, (stage, st) in enumerate(zip(stages, settings)):
            g = st.guidance_scale
            if g != 1.0 and stage.label_dropout == 0.0:
                example = [g if s.label_dropout > 0 else 1.0 for s in stages]
                raise ValueError(
                    f"guidance_scale={g} for stage {k}, which was trained without label "
                    "dropout (label_dropout=0) and so has no unconditional model to guide "
                    f"with. Give one value per stage, guided only where the stage was "
                    f"trained with label dropout: here guidance_scale={example}."
                )
        self.settings = settings
        self.verbose = verbose

    @property
    def num_classes(self):
        """Classes of the cascade's class-conditional stages (0: all are
        unconditional, and `sample` takes `num_images`)."""
        return max(st.num_classes for st in self.stages)

    @property
    def class_names(self):
        """The class names saved with the first class-conditional stage that
        has them (None if none has)."""
        return next((st.class_names for st in self.stages if st.class_names), None)

    @staticmethod
    def _stage_labels(stage, labels):
        """The labels a stage's `sample` takes (None: an unconditional stage)."""
        return None if stage.unconditional else labels

    def _sampling_kwargs(self, k, seed, image_indices):
        return {
            "image_indices": image_indices,
            "settings": self.settings[k],
            "seed": seed,
            "verbose": self.verbose,
        }

    def _resolve_labels(self, labels, num_images):
        """The request's labels (zeros when every stage is unconditional)."""
        if self.num_classes == 0:
            if labels is not None:
                raise ValueError(
                    "Every stage of this cascade is unconditional: pass `num_images=n` "
                    f"instead of labels. Received: {len(np.asarray(labels))} labels"
                )
            return np.zeros((check_positive_int("num_images", num_images),), "int32")
        if labels is None:
            if num_images is None:
                raise ValueError("Pass `labels` or `num_images`.")
            check_positive_int("num_images", num_images)
            labels = np.arange(num_images) % self.num_classes
        elif num_images is not None and num_images != len(labels):
            raise ValueError(
                f"Pass `labels` or `num_images`, not both with different counts. Received: "
                f"{len(labels)} labels and num_images={num_images}"
            )
        conditional = next(st for st in self.stages if not st.unconditional)
        return conditional.check_labels(np.asarray(labels))

    def sample(
        self,
        labels=None,
        num_images=None,
        seed=0,
        batch_size=None,
        output="float",
        return_all_stages=False,
        first_index=0,
        across_processes=False,
    ):
        """Samples the cascade.

        Args:
            labels: int array of class ids, one per image (unconditional
                stages ignore them; a cascade of unconditional stages only
                takes `num_images`).
            num_images: int. With `labels=None`, labels cycle over the classes.
            seed: int. The same seed gives the same images, however they
                are batched: image `i` draws from streams keyed by the seed,
                the stage and `i` alone.
            batch_size: int or None. Images per batch (`None`: all at once).
            output: str. `"float"` (in [-1, 1]) or `"uint8"`.
            return_all_stages: bool. Also return every stage's output.
            first_index: int. Index of the first image in a larger request:
                sampling a request chunk by chunk, each chunk with the index
                of its first image, gives the images of the whole request.
            across_processes: bool. Spread the request over the processes
                of a `torch.distributed` group or of `jax.distributed`
                (`keras_cdm.backend.process_group()`): each samples its
                share of the images and every process returns them all,
                identical to one process's. Every process must call
                `sample` with the same arguments. Within a process the
                batches are always spread over its devices (JAX).

        Returns:
            The final images, or `(images, [stage outputs])` when
            `return_all_stages`.
        """
        if output not in ("float", "uint8"):
            raise ValueError(f"`output` must be 'float' or 'uint8'. Received: {output!r}")
        labels = self._resolve_labels(labels, num_images)
        seed = check_seed(seed)
        batch_size = check_positive_int("batch_size", batch_size, allow_none=True) or len(labels)
        if isinstance(first_index, bool) or not isinstance(first_index, numbers.Integral):
            raise ValueError(f"`first_index` must be an int >= 0. Received: {first_index!r}")
        if first_index < 0:
            raise ValueError(f"`first_index` must be an int >= 0. Received: {first_index!r}")
        rank, world = process_group() if across_processes else (0, 1)
        if world > len(labels):
            raise ValueError(
                f"Cannot spread {len(labels)} images over {world} processes: "
                "request at least one image per process."
            )
        # Contiguous shares in rank order: process r samples images
        # `share` of the request (each image's noise depends on its index).
        share = np.array_split(np.arange(len(labels)), world)[rank]
        per_stage = [[] for _ in self.stages]
        for start in range(0, len(share), batch_size):
            positions = share[start : start + batch_size]
            outs = self._sample_batch(labels[positions], seed, first_index + positions)
            for k, out in enumerate(outs):
                per_stage[k].append(out)
        per_stage = [np.concatenate(p, axis=0) for p in per_stage]
        if world > 1:
            per_stage = [gather_processes(p, len(labels)) for p in per_stage]
        if output == "uint8":
            per_stage = [to_uint8(p) for p in per_stage]
        if return_all_stages:
            return per_stage[-1], per_stage
        return per_stage[-1]

    def stage_seed(self, seed, stage):
        """The seed stage `stage` samples with for the cascade's `seed`."""
        return derive_seed(seed, stage)

    def _announce(self, k):
        if self.verbose:
            print(f"[keras_cdm] cascade stage {k + 1} of {len(self.stages)}", flush=True)

    def _sample_batch(self, labels, seed, indices):
        truncated = self.mode == "truncated"
        outputs = []
        self._announce(0)
        stop = self.aug_levels[0] if truncated and self.aug_levels else 0
        x = self.stages[0].sample(
            self._stage_labels(self.stages[0], labels),
            stop_at=stop,
            num_images=len(labels),
            **self._sampling_kwargs(0, self.stage_seed(seed, 0), indices),
        )
        outputs.append(x)
        for k, stage in enumerate(self.stages[1:], start=1):
            s = int(self.aug_levels[k - 1])
            noisy = truncated and s > 0
            cond = x if noisy else np.clip(x, -1.0, 1.0)
            stop = self.aug_levels[k] if truncated and k < len(self.aug_levels) else 0
            self._announce(k)
            x = stage.sample(
                cond,
                self._stage_labels(stage, labels),
                aug_level=s,
                noisy_low_res=noisy,
                stop_at=stop,
                **self._sampling_kwargs(k, self.stage_seed(seed, k), indices),
            )
            outputs.append(x)
        return outputs

    def sweep_aug_levels(self, aug_levels, labels=None, num_images=None, seed=0):
        """Non-truncated sweep over the last stage's level `s`.

        Samples every stage below the last once and reuses those samples for
        each `s` in `aug_levels` (the cheap search the paper describes).

        Returns:
            A dict `{s: images}` of float images in [-1, 1], plus the key
            `"low_res"` with the shared conditioning.
        """
        if len(self.stages) < 2:
            raise ValueError("A sweep over s needs at least one SR stage.")
        labels = self._resolve_labels(labels, num_images)
        seed = check_seed(seed)
        below = CascadeSampler(
            self.stages[:-1],
            aug_levels=self.aug_levels[:-1],
            mode="non_truncated",
            settings=self.settings[:-1],
            verbose=self.verbose,
        )
        if below.num_classes:
            low_res = below.sample(labels, seed=seed)
        else:
            low_res = below.sample(num_images=len(labels), seed=seed)
        last = len(self.stages) - 1
        results = {"low_res": low_res}
        for s in aug_levels:
            results[s] = self.stages[-1].sample(
                low_res,
                self._stage_labels(self.stages[-1], labels),
                aug_level=s,
                **self._sampling_kwargs(last, self.stage_seed(seed, last), np.arange(len(labels))),
            )
        return results
