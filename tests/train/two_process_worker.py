"""Run by tests/train/test_pretrain.py under `accelerate launch --multi_gpu --num_processes 2`
(two gloo processes on CPU): trains the tiny model on the toy language and writes what each
process saw to OUT/rank<i>.json."""

import json
import sys
from pathlib import Path

import torch.distributed
from accelerate import PartialState

sys.path.insert(0, str(Path(__file__).parent))
from test_loop import PAD, _samples  # noqa: E402

from onereason.model.backbone import build_model  # noqa: E402
from onereason.train.loop import LoopConfig, train  # noqa: E402

out = Path(sys.argv[1])
state = PartialState(cpu=True)
cfg = LoopConfig(epochs=2, lr=1e-2, batch_tokens=128, checkpoint_every=4, log_every=2, warmup_ratio=0.1)
model, stats = train(build_model("tiny", 48, seed=0), _samples(), PAD, cfg, out / "run", progress=False)
checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
(out / f"rank{state.process_index}.json").write_text(json.dumps({
    "processes": state.num_processes, "backend": str(state.backend), "final_loss": stats["final_loss"],
    "steps": stats["steps"], "checksum": checksum}))
state.wait_for_everyone()
torch.distributed.destroy_process_group()  # gloo's threads stopped before exit; left running they can abort it
