"""The self-training half of a step (DACS, DAFormer, MIC): the mean teacher's pseudo-labels on the
target batch, learnt by the student on ClassMix images (and, for MIC, on the masked target image).

The parts are tested on their own (mslseg.training.teacher, mslseg.data.mixing,
mslseg.training.rare_class); this module puts them in the order the papers give:

1. the teacher labels the un-augmented target batch (its BatchNorm on the batch's statistics, as
   the references' train-mode teacher; on its stored ones with model.bn: frozen), each pixel
   weighted by the share of confident pixels;
2. ClassMix: half of each source image's classes pasted onto a target image, the labels mixed the
   same way (source pixels weigh 1), then colour jitter and Gaussian blur on the mixed image;
3. the student's pixel-weighted cross-entropy on the mixed image (weight 1, as the papers; with
   multi-level, the auxiliary head's too at lambda_seg, as on source images);
4. MIC: the student on the target image with random blocks masked learns the teacher's labels of
   the whole image (weight `lambda_mic`);
5. after the optimiser step, the teacher moves towards the student (EMA).

Randomness (which classes, which blocks, jitter, blur) comes from a generator seeded by
(seed, iteration, rank): a resumed run draws exactly what the uninterrupted one drew.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mslseg.data.mixing import apply_mask, classmix_masks, color_jitter, gaussian_blur, mic_mask, mix
from mslseg.methods import METHODS, SelfTraining
from mslseg.models.base import split_output
from mslseg.runtime.errors import ConfigError
from mslseg.runtime.metadata import Normalization
from mslseg.training.teacher import EmaTeacher, pseudo_label, pseudo_label_loss

MIC_BLOCK_SHARE = 64 / 512  # MIC's 64-pixel blocks on DAFormer's 512-pixel crops: an eighth of the side


def mic_block(size: tuple[int, int], block: int | None) -> int:
    """The MIC block side for crops of `size` (H, W): `block`, or an eighth of the shorter side."""
    return block if block else max(1, round(MIC_BLOCK_SHARE * min(size)))


@dataclass
class SelfTrainingStats:
    loss_pseudo: float = 0.0  # the student's weighted CE on the mixed images
    loss_mic: float = 0.0
    confident: float = 0.0  # the share of target pixels the teacher labels above the threshold
    alpha: float = 0.0  # the teacher's EMA momentum at this step


class SelfTrainer:
    """A run's mean teacher and what it does each step; built once per run (`for_run`)."""

    def __init__(self, student: nn.Module, method: Any, spec: SelfTraining, norm: Normalization, seed: int,
                 rank: int = 0, *, batch_stats: bool = True):
        self.method, self.spec, self.norm = method, spec, norm
        self.seed, self.rank = seed, rank
        self.batch_stats = batch_stats  # the teacher's BatchNorm on the target batch's statistics
        self.teacher = EmaTeacher(student, alpha_max=method.teacher_alpha)

    @classmethod
    def for_run(cls, student: nn.Module, method: Any, norm: Normalization, seed: int,
                rank: int = 0, *, bn: str = "train") -> SelfTrainer | None:
        """The trainer a method (a MethodConfig) needs, or None for MSL's family. `bn` (model.bn):
        frozen BatchNorm keeps the teacher on its stored statistics too."""
        spec = METHODS[method.target_loss].self_training
        return cls(student, method, spec, norm, seed, rank, batch_stats=bn == "train") if spec is not None else None

    def to(self, device: torch.device) -> SelfTrainer:
        self.teacher.model.to(device)
        return self

    def generator(self, iteration: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + iteration * 7_919 + self.rank * 104_729)
                                             % 2**63)

    def losses(self, model: nn.Module, source_image: Tensor, source_label: Tensor, target_image: Tensor,
               iteration: int, autocast: Any) -> tuple[Tensor, SelfTrainingStats]:
        """The self-training loss of one step (a scalar to backpropagate) and what it measured."""
        m, g = self.method, self.generator(iteration)
        with autocast:  # the pseudo-labels' softmax is taken in float32 (pseudo_label_from_logits)
            labels, weight = pseudo_label(self.teacher, target_image, threshold=m.pseudo_threshold,
                                          ignore_top=m.pseudo_ignore_top, ignore_bottom=m.pseudo_ignore_bottom,
                                          batch_stats=self.batch_stats)
        stats = SelfTrainingStats(confident=float(weight.flatten(1).amax(dim=1).mean()))
        n = min(source_image.shape[0], target_image.shape[0])
        mask = classmix_masks(source_label[:n], g)  # (n, H, W): True where the source is pasted
        if tuple(mask.shape[-2:]) != tuple(target_image.shape[-2:]):
            raise ConfigError(f"ClassMix pastes source pixels onto target images, so both need one crop size; "
                              f"source batches are {source_image.shape[-1]}x{source_image.shape[-2]}, target "
                              f"{target_image.shape[-1]}x{target_image.shape[-2]}: set source.size and target.size alike")
        mixed = mix(mask, source_image[:n], target_image[:n])
        mixed = gaussian_blur(color_jitter(mixed, self.norm, g), g)
        mixed_label = mix(mask, source_label[:n], labels[:n])
        mixed_weight = mix(mask, torch.ones_like(weight[:n]), weight[:n])
        with autocast:
            if m.multi_level:  # the aux head learns the mixed labels too (x lambda_seg), as it learns the source's
                main, aux = split_output(model(mixed, with_aux=True), "the student")
            else:
                main, aux = split_output(model(mixed), "the student")[0], None
            loss = pseudo_label_loss(main, mixed_label, mixed_weight)
            stats.loss_pseudo = loss.item()
            if aux is not None:
                loss = loss + m.lambda_seg * pseudo_label_loss(aux, mixed_label, mixed_weight)
        if self.spec.mic:
            block = mic_block(tuple(target_image.shape[-2:]), m.mic_block)
            masked = apply_mask(target_image, mic_mask(target_image.shape, g, block=block, ratio=m.mic_ratio,
                                                       device=target_image.device))
            with autocast:
                main_m, _ = split_output(model(masked), "the student")
                loss_mic = pseudo_label_loss(main_m, labels, weight)
            stats.loss_mic = loss_mic.item()
            loss = loss + m.lambda_mic * loss_mic
        return loss, stats

    def update(self, student: nn.Module, iteration: int) -> float:
        """The teacher's EMA step after the student's `iteration`-th optimiser step; returns alpha."""
        return self.teacher.update(student, iteration)

    def state_dict(self) -> dict[str, Tensor]:
        return self.teacher.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.teacher.load_state_dict(state)
