import lightning as L
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader


class DigitsTable(L.LightningDataModule):
    """scikit-learn's digits as 64 numbers a record. What ClassificationModule reads of a
    DataModule is lifecycle.interfaces.ClassificationData: `num_classes` (required) and
    `class_names` (optional, for the reports). Batches are dicts holding the backbone's
    `input_keys` and a `label`."""

    num_classes = 10
    class_names = [str(digit) for digit in range(10)]

    def __init__(self, batch_size: int = 64, seed: int = 0):
        super().__init__()
        self.batch_size, self.seed = batch_size, seed

    def setup(self, stage: str) -> None:
        x, y = load_digits(return_X_y=True)
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.seed))
        records = [{"pixels": torch.tensor(x[i] / 16, dtype=torch.float32), "label": int(y[i])}
                   for i in order.tolist()]  # fmt: skip
        cut, end = int(0.6 * len(records)), int(0.8 * len(records))
        self.train, self.val, self.test = records[:cut], records[cut:end], records[end:]

    def train_dataloader(self):
        return DataLoader(self.train, self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val, self.batch_size)

    def test_dataloader(self):
        return DataLoader(self.test, self.batch_size)
