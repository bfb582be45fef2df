from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lifecycle.data import ImageClassificationDataModule
from lifecycle.errors import ConfigError, MissingFileError
from lifecycle.models import MLP, SmallCNN
from lifecycle.stages import ClassificationModule, DistillationModule
from lifecycle.stages.distillation import load_teacher, soft_target_loss
from tests.conftest import quiet_trainer


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory):
    """A CNN trained on all digits labels (about 0.97 test accuracy)."""
    torch.manual_seed(0)
    teacher = ClassificationModule(
        SmallCNN(channels=(16, 32), hidden=64, pool_size=2, dropout=0.1),
        10,
        optimizer=partial(torch.optim.AdamW, lr=0.01),
    )
    dm = ImageClassificationDataModule("digits", batch_size=64)
    quiet_trainer(tmp_path_factory.mktemp("teacher"), max_epochs=12).fit(teacher, dm)
    return teacher.eval()


def agreement(student, teacher, dm) -> float:
    with torch.no_grad():
        x = dm.split_dataset("test").tensor
        return (student(x).argmax(-1) == teacher(x).argmax(-1)).float().mean().item()


def test_soft_target_loss_is_hintons_kl_times_t_squared():
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 5), torch.randn(8, 5)
    t = 3.0
    p = F.softmax(teacher / t, -1)
    expected = (p * (p.log() - F.log_softmax(student / t, -1))).sum(-1).mean() * t * t
    assert torch.allclose(soft_target_loss(student, teacher, t), expected, atol=1e-6)
    assert soft_target_loss(teacher, teacher, t).abs() < 1e-6


def test_teacher_stays_frozen_outside_optimizer_and_checkpoint(digits_teacher, tmp_path):
    before = {k: v.clone() for k, v in digits_teacher.state_dict().items()}
    torch.manual_seed(0)
    model = DistillationModule(
        digits_teacher,
        MLP(64, [32]),
        10,
        temperature=4.0,
        alpha=0.7,
        optimizer=partial(torch.optim.AdamW, lr=0.01),
    )
    assert not any(k.startswith("teacher") for k in model.state_dict())
    assert "teacher" not in model.hparams and "student" not in model.hparams
    dm = ImageClassificationDataModule("digits", batch_size=64)
    trainer = quiet_trainer(tmp_path, max_epochs=8, enable_checkpointing=True)
    trainer.fit(model, dm)
    teacher_params = {id(p) for p in digits_teacher.parameters()}
    optimized = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not teacher_params & optimized
    assert not digits_teacher.training and not any(
        p.requires_grad for p in digits_teacher.parameters()
    )
    after = digits_teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm stats included
    # the checkpoint holds the student under a classifier's keys: it loads into one
    checkpoint = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=False)
    assert {k.split(".")[0] for k in checkpoint["state_dict"]} == {"backbone", "head"}
    plain = ClassificationModule(MLP(64, [32]), 10)
    plain.load_state_dict(checkpoint["state_dict"])
    metrics = trainer.test(model, dm, verbose=False)[0]
    assert metrics["test/accuracy"] > 0.85
    assert agreement(model.eval(), digits_teacher, dm) > 0.85
    student = model.to_classifier()
    x = dm.split_dataset("test").tensor[:16]
    assert torch.equal(student.eval()(x), model(x))


def test_unlabeled_transfer_set_lifts_a_student_with_few_labels(digits_teacher, tmp_path):
    """The case distillation exists for: 50 labels, the rest of the training images scored by
    the teacher."""
    accuracies = {}
    for name in ("scratch", "distilled"):
        torch.manual_seed(0)
        dm = ImageClassificationDataModule(
            "digits", batch_size=64, train_subset=50, unlabeled_rest=name == "distilled"
        )
        opt = partial(torch.optim.AdamW, lr=0.01)
        if name == "scratch":
            model = ClassificationModule(MLP(64, [32]), 10, optimizer=opt)
        else:
            model = DistillationModule(digits_teacher, MLP(64, [32]), 10, alpha=0.9, optimizer=opt)
        trainer = quiet_trainer(tmp_path, max_epochs=30 if name == "scratch" else 8)
        trainer.fit(model, dm)
        accuracies[name] = trainer.test(model, dm, verbose=False)[0]["test/accuracy"]
    assert dm.unlabeled_count == len(dm.splits["train"]) - 50
    assert (dm.splits["train"].y == -1).sum() == dm.unlabeled_count
    assert accuracies["distilled"] > accuracies["scratch"] + 0.05, accuracies


def test_cached_teacher_scores_each_record_once(digits_teacher, tmp_path):
    torch.manual_seed(0)
    dm = ImageClassificationDataModule("digits", batch_size=64)
    model = DistillationModule(digits_teacher, MLP(64, [16]), 10, cache_teacher=True)
    quiet_trainer(tmp_path, max_epochs=3).fit(model, dm)
    train = dm.split_dataset("train")
    assert model.teacher_calls == len(train) + 2  # one epoch's worth, plus the 2-record probe
    assert bool(model.cached.all())
    with torch.no_grad():
        live = digits_teacher(train.tensor)
    assert torch.allclose(model.cached_logits, live, atol=1e-5)


def test_cache_with_augmentation_is_refused_with_the_fix(digits_teacher, tmp_path):
    dm = ImageClassificationDataModule("digits", train_transforms="light")
    model = DistillationModule(digits_teacher, MLP(64, [16]), 10, cache_teacher=True)
    with pytest.raises(ConfigError, match="augmented.*cache_teacher: false"):
        quiet_trainer(tmp_path, max_epochs=1).fit(model, dm)
    with pytest.raises(ConfigError, match="mix: mixup"):
        DistillationModule(digits_teacher, MLP(64, [16]), 10, cache_teacher=True, mix="mixup")


class Recorder(nn.Module):
    """Records what it was called with; ``inner`` computes the output."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.seen = inner, []
        self.out_features = getattr(inner, "out_features", None)

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.inner(x)


def test_teacher_and_student_see_the_same_augmented_and_mixed_view(digits_teacher):
    teacher = Recorder(digits_teacher)
    student = Recorder(MLP(64, [16]))
    model = DistillationModule(teacher, student, 10, mix="mixup", mix_alpha=1.0)
    dm = ImageClassificationDataModule("digits", batch_size=32, train_transforms="light")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    torch.manual_seed(3)
    model.training_step(batch, 0)
    assert torch.equal(teacher.seen[-1], student.seen[-1])
    assert not torch.equal(student.seen[-1], batch["image"])  # it was mixed


def test_teacher_with_another_normalization_gets_its_own(digits_teacher, tmp_path):
    seen = Recorder(digits_teacher)
    seen.normalization = ([0.5], [0.5])  # what load_teacher reads from a teacher's checkpoint
    dm = ImageClassificationDataModule("digits", batch_size=64)
    model = DistillationModule(seen, MLP(64, [16]), 10)
    quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(model, dm)
    raw = dm.splits["train"].x[:2, ..., 0] / 255.0  # the probe batch, as [0, 1] pixels
    assert torch.allclose(seen.seen[0][:, 0], torch.as_tensor((raw - 0.5) / 0.5).float(), atol=1e-5)


def test_feature_distillation_learns_an_adapter(digits_teacher, tmp_path):
    losses = []

    torch.manual_seed(0)
    student = SmallCNN(channels=(4, 8), hidden=16, pool_size=2, dropout=0.0)
    model = DistillationModule(
        digits_teacher,
        student,
        10,
        feature_layers={"features.3": "backbone.features.3", "": "backbone"},
        optimizer=partial(torch.optim.AdamW, lr=0.01),
    )
    dm = ImageClassificationDataModule("digits", batch_size=64)
    from lightning.pytorch.callbacks import Callback

    class Record(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            losses.append(float(trainer.callback_metrics["train/feature_loss"]))

    quiet_trainer(tmp_path, max_epochs=4, callbacks=[Record()]).fit(model, dm)
    adapter = model.adapters["features_3"].proj
    assert isinstance(adapter, nn.Conv2d) and (adapter.in_channels, adapter.out_channels) == (4, 16)
    assert isinstance(model.adapters["backbone"].proj, nn.Linear)
    assert losses[-1] < 0.7 * losses[0], losses


def test_bad_input_errors_name_the_problem_and_fix(digits_teacher):
    with pytest.raises(ConfigError, match=r"teacher outputs 10 classes.*num_classes: 10"):
        DistillationModule(digits_teacher, MLP(64, [16]), 5)
    with pytest.raises(ConfigError, match=r"no layer named 'layers\.9'.*'layers\.0'"):
        DistillationModule(digits_teacher, MLP(64, [16]), 10, feature_layers={"layers.9": ""})
    with pytest.raises(ConfigError, match=r"teacher has no layer named 'conv'.*'head.linear'\]"):
        DistillationModule(digits_teacher, MLP(64, [16]), 10, feature_layers={"layers.0": "conv"})
    model = DistillationModule(
        digits_teacher, MLP(64, [16]), 10, feature_layers={"": "backbone"}, feature_adapter=False
    )
    dm = ImageClassificationDataModule("digits")
    dm.setup("fit")
    with pytest.raises(
        ConfigError, match=r"outputs \(16,\).*outputs \(64,\).*feature_adapter: true"
    ):
        model._probe(dm.example_batch())
    with pytest.raises(ConfigError, match="`alpha` must be in"):
        DistillationModule(digits_teacher, MLP(64, [16]), 10, alpha=1.5)
    with pytest.raises(MissingFileError, match="does not exist"):
        load_teacher("runs/none/checkpoints/last.ckpt")


def test_unlabeled_records_are_refused_by_plain_classification(tmp_path):
    dm = ImageClassificationDataModule("digits", train_subset=100, unlabeled_rest=True)
    with pytest.raises(ValueError, match="without labels.*DistillationModule"):
        quiet_trainer(tmp_path, max_epochs=1).fit(ClassificationModule(MLP(64, [8]), 10), dm)
    with pytest.raises(ValueError, match="`train_subset` is not set"):
        ImageClassificationDataModule("digits", unlabeled_rest=True)


# --------------------------------------------------------------------------- text
def sentiment_csv(path, n=80):
    words = {"1": ["great", "love", "happy", "superb"], "0": ["awful", "hate", "sad", "boring"]}
    lines = ["text,label"]
    for i in range(n):
        label = str(i % 2)
        lines.append(
            f"review {i} was {words[label][i % 4]} and {words[label][(i + 1) % 4]},{label}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def bert_teacher_folder(tmp_path, texts, num_labels=2):
    """A tiny transformers BERT classifier saved with its own WordPiece tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    from lifecycle.data.tokenization import train_tokenizer

    tokenizer = train_tokenizer(texts, "wordpiece", vocab_size=120, min_frequency=1)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, num_labels=num_labels,
    )  # fmt: skip
    folder = tmp_path / "bert-teacher"
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_text_teacher_gets_its_own_tokenization_of_the_same_texts(tmp_path):
    from lifecycle.data import TextClassificationDataModule
    from lifecycle.data.tokenization import load_tokenizer
    from lifecycle.models import TextCNN

    csv = sentiment_csv(tmp_path / "reviews.csv")
    texts = csv.read_text().splitlines()[1:]
    folder = bert_teacher_folder(tmp_path, [t.rsplit(",", 1)[0] for t in texts])
    teacher = load_teacher(str(folder))
    assert type(teacher).__name__ == "TransformersClassifier" and not teacher.training
    dm = TextClassificationDataModule(str(csv), vocab_size=150, min_frequency=1, batch_size=8)
    torch.manual_seed(0)
    model = DistillationModule(
        teacher, TextCNN(vocab_size=300, embedding_dim=16, num_filters=8), 2, cache_teacher=True
    )
    quiet_trainer(tmp_path, max_epochs=2, limit_val_batches=0).fit(model, dm)
    batch = dm.example_batch("train", size=4)
    student_texts = dm.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    teacher_texts = load_tokenizer(folder).batch_decode(
        batch["teacher_input_ids"], skip_special_tokens=True
    )
    assert [t.replace(" ", "") for t in student_texts] == [
        t.replace(" ", "") for t in teacher_texts
    ]
    assert not torch.equal(batch["teacher_input_ids"][:, :5], batch["input_ids"][:, :5])
    assert model.teacher_calls == len(dm.split_dataset("train")) + 2  # cached after epoch 1
    with pytest.raises(ConfigError, match="teacher outputs 3 classes"):
        DistillationModule(load_teacher(str(bert_teacher_folder(tmp_path, texts, 3))), TextCNN(), 2)


def test_token_augmentation_with_another_teacher_tokenizer_is_refused(tmp_path):
    from lifecycle.data import TextClassificationDataModule
    from lifecycle.models import TextCNN

    csv = sentiment_csv(tmp_path / "reviews.csv")
    teacher = load_teacher(str(bert_teacher_folder(tmp_path, csv.read_text().splitlines())))
    dm = TextClassificationDataModule(
        str(csv), vocab_size=150, min_frequency=1, batch_size=8, augment_mask=0.1
    )
    model = DistillationModule(teacher, TextCNN(vocab_size=300, embedding_dim=16), 2)
    with pytest.raises(ValueError, match="could not see the same augmented text"):
        quiet_trainer(tmp_path, fast_dev_run=True).fit(model, dm)


def test_a_checkpoint_of_a_module_built_in_python_says_how_to_pass_the_teacher(tmp_path):
    path = tmp_path / "python.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"num_classes": 10}}, path)
    with pytest.raises(ConfigError, match="pass the module as `teacher`"):
        load_teacher(str(path))


def test_a_recipe_checkpoint_rebuilds_its_module_and_teaches(tmp_path):
    """A checkpoint of a recipe run records the backbone's config, so the module is rebuilt
    from the checkpoint alone, and load_teacher takes the DataModule state saved beside it."""
    from lifecycle.cli import LifecycleCLI, recipe_cli
    from tests.conftest import REPO
    from tests.test_recipes import teacher_checkpoint

    recipe = "recipes/digits/classify.yaml"
    state = {"mean": [0.3], "std": [0.2], "eval_transforms": None}
    path = teacher_checkpoint(tmp_path, recipe, ImageClassificationDataModule=state)
    rebuilt = ClassificationModule.load_from_checkpoint(path, weights_only=True)
    cli = recipe_cli(LifecycleCLI, ["--config", str(REPO / recipe),
                                    "--trainer.default_root_dir", str(tmp_path)])  # fmt: skip
    assert type(rebuilt.backbone) is type(cli.model.backbone)
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in rebuilt.state_dict().items())
    teacher = load_teacher(path)
    assert teacher.normalization == ([0.3], [0.2]) and not teacher.training
