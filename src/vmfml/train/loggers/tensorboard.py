"""`--log-to tensorboard`: the epochs' records as TensorBoard scalars, in RUN/tensorboard.

`tensorboard --logdir RUN/tensorboard` shows them: one scalar per number of history.json (the
same names: train_loss, val_recall@1, ...), at step = epoch; the config as text at step 0. A
resumed run writes the epochs it restored again, after a purge mark that makes the readers drop
what the interrupted run wrote from epoch 1 on, so that what TensorBoard shows is history.json.
"""

from __future__ import annotations

from typing import Any

import yaml

from vmfml.train.loggers.base import RunLogger, RunStart, numbers

FOLDER = "tensorboard"


class TensorBoardLogger(RunLogger):
    def __init__(self) -> None:
        self.writer: Any = None

    def start(self, run: RunStart) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(
            str(run.out_dir / FOLDER), purge_step=1 if run.resumed else None
        )
        if not run.resumed:
            config = yaml.safe_dump(run.config.to_dict(), sort_keys=False)
            self.writer.add_text("config", f"```yaml\n{config}```", 0)
        for record in run.history:
            self.epoch(record)

    def epoch(self, record: dict[str, Any]) -> None:
        for key, value in numbers(record).items():
            self.writer.add_scalar(key, value, record["epoch"])
        self.writer.flush()  # an interrupted run keeps every epoch it logged

    def close(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()
