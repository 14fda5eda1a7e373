"""RL for recommendation: two-stage rollouts, the set-wise reward, GRPO with split clipping, and
the unification of per-domain experts (RFT, multi-teacher on-policy distillation)."""
