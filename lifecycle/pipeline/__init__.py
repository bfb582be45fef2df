"""The joined lifecycle: pipelines of stages, their lineage and cache.

- :mod:`lifecycle.pipeline.spec`: a pipeline recipe (named stages, each an existing subcommand
  with its stage recipe, overrides and inputs from earlier stages' declared outputs), parsed and
  checked before anything runs;
- :mod:`lifecycle.pipeline.runner`: ``lifecycle run``: the plan (cached, resumed or run, and
  why), the stages run in order into one pipeline folder, the summary;
- :mod:`lifecycle.pipeline.lineage`: the lineage record of every stage (config, code, inputs and
  outputs with their content hashes, metrics), in its folder and in its checkpoints, and
  ``lifecycle lineage``;
- :mod:`lifecycle.pipeline.tracking`: the pipeline as MLflow runs (``--tracking mlflow``).
"""
