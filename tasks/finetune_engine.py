"""The optimizer side of fine-tuning: plain AdamW (optionally DDP) or DeepSpeed ZeRO.

`TrainEngine` hides which one runs so that `tasks.finetune.train_finetune` has one loop. Mixed
precision keeps fp32 master weights (torch autocast) on the plain path; DeepSpeed handles bf16/fp16
itself. DeepSpeed on CPU needs `DS_ACCELERATOR=cpu` before it is imported and a gloo group.
"""

from __future__ import annotations

import os
from typing import Any

from tasks.net import free_port

WARMUP_FRACTION = 0.1
MAX_GRAD_NORM = 1.0


def autocast(precision: str, device: str) -> Any:
    """A torch autocast context for bf16/fp16 (disabled for fp32)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(kind, dtype=dtype or torch.float32, enabled=dtype is not None)


def deepspeed_config(family: Any, precision: str) -> dict[str, Any]:
    """The DeepSpeed config of a family: ZeRO stage, micro-batch, precision, clipping."""
    return {
        "train_micro_batch_size_per_gpu": family.batch_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": MAX_GRAD_NORM,
        "zero_optimization": {"stage": int(family.deepspeed.zero_stage)},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        # The optimizer is torch's AdamW (DeepSpeed's fused Adam needs CUDA).
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
    }


def param_groups(model: Any, family: Any, fresh: set[str]) -> list[dict[str, Any]]:
    """AdamW's parameter groups: the pretrained body at `learning_rate`, the parameters the
    checkpoint did not have (`fresh`: the new classification head) at `head_learning_rate`
    where the family sets one. A head that starts from random weights needs a larger step than
    the body it sits on, or few steps (a small regime) leave it near its start."""
    head_lr = getattr(family, "head_learning_rate", None)
    body = [p for n, p in model.named_parameters() if head_lr is None or n not in fresh]
    head = [p for n, p in model.named_parameters() if head_lr is not None and n in fresh]
    groups = [{"params": body, "lr": family.learning_rate}]
    if head:
        groups.append({"params": head, "lr": head_lr})
    return groups


class TrainEngine:
    """One optimizer step per batch, on a plain model, a DDP model or a DeepSpeed engine."""

    def __init__(
        self,
        model: Any,
        family: Any,
        precision: str,
        device: str,
        total_steps: int,
        distributed: bool,
        fresh: set[str] = frozenset(),
    ):
        import torch
        from transformers import get_linear_schedule_with_warmup

        self.precision = precision
        self.device = device
        self._module = model
        self._owns_group = False
        opt = torch.optim.AdamW(param_groups(model, family, fresh), weight_decay=0.01)
        sched = get_linear_schedule_with_warmup(
            opt, int(WARMUP_FRACTION * total_steps), max(total_steps, 1)
        )
        self.deepspeed = family.deepspeed is not None
        if self.deepspeed:
            self._init_deepspeed(family, opt, sched, distributed)
            return
        self.opt, self.sched = opt, sched
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        self.wrapped = model
        if distributed:
            ids = [torch.device(device)] if device.startswith("cuda") else None
            self.wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def _init_deepspeed(self, family: Any, opt: Any, sched: Any, distributed: bool) -> None:
        os.environ.setdefault("DS_ACCELERATOR", "cuda" if self.device.startswith("cuda") else "cpu")
        import deepspeed

        if not distributed:
            # A single process still needs a process group for ZeRO; make a one-member gloo one.
            for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
                os.environ.setdefault(key, value)
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", str(free_port()))
            backend = "nccl" if self.device.startswith("cuda") else "gloo"
            deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
            self._owns_group = True
        self.zero_stage = int(family.deepspeed.zero_stage)
        self.wrapped, self.opt, _, self.sched = deepspeed.initialize(
            model=self._module,
            optimizer=opt,
            lr_scheduler=sched,
            config=deepspeed_config(family, self.precision),
        )

    @property
    def module(self) -> Any:
        """The model itself (not the DDP / DeepSpeed wrapper)."""
        return self.wrapped.module if self.deepspeed else self._module

    def train(self) -> None:
        self.wrapped.train()

    def forward(self, batch: dict[str, Any]) -> Any:
        """Logits of one batch."""
        if self.deepspeed:
            return self.wrapped(**batch).logits
        with autocast(self.precision, self.device):
            return self.wrapped(**batch).logits

    def step(self, loss: Any) -> None:
        """Backward and optimizer step for one batch's loss."""
        import torch

        if self.deepspeed:
            self.wrapped.backward(loss)
            self.wrapped.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self._module.parameters(), MAX_GRAD_NORM)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)

    def finish(self) -> Any:
        """The trained model with full (unpartitioned) weights; releases a group it created."""
        model = self.module
        if self.deepspeed and self.zero_stage == 3:
            import deepspeed

            # ZeRO-3 partitions every weight across processes; gather them into a copy.
            params = list(model.parameters())
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                state = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
            fresh = type(model)(model.config)
            fresh.load_state_dict(state)
            # On the training device, like the other engines' models: rank 0 scores it next.
            model = fresh.to(self.device)
        if self._owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
        return model
