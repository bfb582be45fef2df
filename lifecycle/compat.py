"""The private names of torch and Lightning that the toolkit uses, each in one place, with the
version it was checked on; ``tests/test_compat.py`` checks that each still exists, so an upgrade
that renames one fails a test instead of silently undoing a fix.

- ``torch.distributed.device_mesh.DeviceMesh._pg_registry`` (torch 2.13.0): a dict of group name
  to ``ProcessGroup`` that every root mesh keeps (its submeshes register there too).
- ``torch.distributed.fsdp._fully_shard._fsdp_common.DataParallelMeshInfo`` (torch 2.13.0): the
  base of FSDP2's ``FSDPMeshInfo``/``DDPMeshInfo``/``HSDPMeshInfo``; each holds its mesh's
  process groups as attributes (``shard_process_group``, ``replicate_process_group``,
  ``reduce_scatter_process_group``).
"""

from __future__ import annotations

import gc
import sys

FSDP_COMMON = "torch.distributed.fsdp._fully_shard._fsdp_common"


def release_process_group_references() -> int:
    """Drop the references to process groups that torch's ``DeviceMesh`` and FSDP2 keep after
    ``torch.distributed.destroy_process_group()``, so that the groups are really freed.

    ``destroy_process_group`` only forgets the groups in ``torch.distributed``'s own tables; a
    gloo group's worker threads are joined by its destructor, which runs once the last reference
    goes. A device mesh (``_pg_registry``) and every FSDP2 unit (its mesh info) hold references
    for as long as the model lives, which under Lightning is until the interpreter finalizes:
    see :mod:`lifecycle.training.strategies` for the abort this causes. Call it only once the
    groups are destroyed: the meshes and sharded modules cannot communicate afterwards.

    Returns:
        How many references were dropped.
    """
    import torch.distributed as dist

    # none of their instances can exist unless the modules were imported: no import at exit
    mesh_module = sys.modules.get("torch.distributed.device_mesh")
    fsdp_module = sys.modules.get(FSDP_COMMON)
    DeviceMesh = getattr(mesh_module, "DeviceMesh", ())
    DataParallelMeshInfo = getattr(fsdp_module, "DataParallelMeshInfo", ())
    dropped = 0
    for obj in gc.get_objects():
        kind = type(obj)  # not isinstance: it asks lazy and deprecated objects for __class__
        if issubclass(kind, DeviceMesh):
            registry = obj.__dict__.get("_pg_registry")
            if registry:
                dropped += len(registry)
                registry.clear()
        elif issubclass(kind, DataParallelMeshInfo):
            for name, value in list(vars(obj).items()):
                if isinstance(value, dist.ProcessGroup):
                    setattr(obj, name, None)
                    dropped += 1
    return dropped


# ---------------------------------------------------------------- stages (issue 19, STAGES)
# Lightning's key, in a checkpoint's ``hyper_parameters``, naming the function that built the
# module from its config (LightningCLI's ``instantiate_module``); checked on lightning 2.6.6.
INSTANTIATOR_KEY = "_instantiator"


def checkpoint_instantiator(hparams: dict) -> str | None:
    """The instantiator a checkpoint's ``hyper_parameters`` name (``None`` when the module was
    built from Python). Private: the ``"_instantiator"`` key Lightning's
    ``_given_hyperparameters_context`` adds; checked on lightning 2.6.6."""
    return hparams.get(INSTANTIATOR_KEY) if isinstance(hparams, dict) else None


def cli_given_hyperparameters() -> dict | None:
    """The config LightningCLI is building the current LightningModule from (what
    ``save_hyperparameters`` records instead of the ``__init__`` arguments), or ``None`` when
    the module is built from Python. Private:
    ``lightning.pytorch.core.mixins.hparams_mixin._given_hyperparameters``, a ContextVar;
    checked on lightning 2.6.6."""
    from lightning.pytorch.core.mixins import hparams_mixin

    return hparams_mixin._given_hyperparameters.get()


# --- training: fault tolerance (lifecycle.training.fault_tolerance) ---------------------------


def load_pending_train_loader_states(trainer) -> bool:
    """Give the training DataLoaders the states of a restored checkpoint that Lightning kept
    pending, set their samplers' epoch, and start their iterators again; ``False`` (and nothing
    done) when no state is pending. The workaround of Lightning#20550 (see
    :func:`lifecycle.training.fault_tolerance.restore_loader_states`).

    Checked on lightning 2.6.6: ``_FitLoop._combined_loader_states_to_load`` (the list of saved
    loader states Lightning gives the loaders when it builds them after the restore),
    ``_FitLoop._combined_loader`` with ``CombinedLoader._load_state_dicts(states)``, and
    ``_FitLoop._data_fetcher``, whose ``iter()`` recreates the loaders' iterators (what
    ``_FitLoop.setup_data`` does).
    """
    fit_loop = trainer.fit_loop
    pending = getattr(fit_loop, "_combined_loader_states_to_load", None)
    loader = getattr(fit_loop, "_combined_loader", None)
    if not pending or loader is None or not fit_loop.restarting:
        return False
    loader._load_state_dicts(pending)
    fit_loop._combined_loader_states_to_load = []
    epoch = fit_loop.epoch_progress.current.processed
    for dataloader in loader.flattened:
        # what Lightning's _set_sampler_epoch does: the sampler and the batch sampler's sampler
        batch_sampler = getattr(dataloader, "batch_sampler", None)
        for sampler in {id(s): s for s in (getattr(dataloader, "sampler", None),
                                           getattr(batch_sampler, "sampler", None))}.values():  # fmt: skip
            if callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(epoch)
    iter(fit_loop._data_fetcher)
    return True


# ---------------------------------------------------------------- distillation (issue 19)
class MovesUnregisteredModules:
    """Mixin for an ``nn.Module`` that holds modules outside its registered submodules (a
    distillation teacher: kept out of the state_dict, the optimizer, DDP's wrapping and
    ``.train()``) and must still move them with it: every device and dtype move (``to``,
    ``cuda``, ``half``, a precision plugin's conversion, a strategy's ``model_to_device``) goes
    through ``nn.Module._apply``, and no public hook sees them all. Subclasses list the modules
    in :meth:`unregistered_modules`. Private: overrides ``torch.nn.Module._apply(fn,
    recurse=True)``; checked on torch 2.13.0."""

    def unregistered_modules(self) -> list:
        """The modules to move with this one (none by default)."""
        return []

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for module in self.unregistered_modules():
            module._apply(fn)
        return self


# ---------------------------------------------------------------- optimizer factories (issue 19)
def factory_target(factory):
    """The class an optimizer or scheduler factory builds. jsonargparse turns a
    ``Callable[..., Optimizer]`` given as ``class_path``/``init_args`` into a
    ``functools.partial`` of its instantiator, the class among its positional arguments and the
    ``init_args`` as its keywords; a hand-written ``partial(torch.optim.SGD, lr=0.1)`` has the
    class as its ``func``. Private: the shape of jsonargparse's partial; checked on jsonargparse
    4.53.0."""
    import functools
    import inspect

    if isinstance(factory, functools.partial):
        classes = [a for a in factory.args if inspect.isclass(a)]
        return classes[0] if classes else factory.func
    return factory


def factory_keyword(factory, name: str):
    """The keyword argument ``name`` a factory was given in its config (``init_args``), or
    ``None`` (see :func:`factory_target`; checked on jsonargparse 4.53.0)."""
    import functools

    return factory.keywords.get(name) if isinstance(factory, functools.partial) else None


def plain_fast_tokenizer_backend(tokenizer):
    """The ``tokenizers.Tokenizer`` behind a transformers fast tokenizer when calling it
    directly gives exactly what ``tokenizer(texts, truncation=True, max_length=...)`` gives: a
    ``TokenizersBackend`` whose class keeps transformers' own ``__call__`` and
    ``_encode_plus`` and has no input/target modes. ``None`` otherwise (a slow tokenizer, or a
    class that adds steps of its own): callers then go through ``tokenizer(...)``. Private:
    ``_tokenizer``, ``_encode_plus`` and ``_switch_to_input_mode``; checked on transformers
    5.23.0 (``tests/test_compat_tokenization.py``)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerBase
    from transformers.tokenization_utils_tokenizers import TokenizersBackend

    backend = getattr(tokenizer, "_tokenizer", None)
    cls = type(tokenizer)
    if (
        not isinstance(backend, Tokenizer)
        or not isinstance(tokenizer, TokenizersBackend)
        or cls.__call__ is not PreTrainedTokenizerBase.__call__
        or cls._encode_plus is not TokenizersBackend._encode_plus
        or hasattr(tokenizer, "_switch_to_input_mode")
    ):
        return None
    return backend


def optuna_trial_id(trial) -> int:
    """The storage id of an Optuna trial (a ``Trial`` or ``FrozenTrial``): what
    ``optuna.trial.Trial(study, trial_id)`` takes to rebuild the trial in another process (a
    sweep's trial run as its own ``lifecycle fit``, each rank of a DDP trial). Private:
    ``_trial_id``, the only place Optuna exposes it; checked on optuna 5.1.0."""
    return trial._trial_id
