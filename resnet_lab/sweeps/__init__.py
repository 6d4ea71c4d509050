"""Hyperparameter sweeps with Optuna.

- ``resnet_lab.sweeps.optuna_sweeper.OptunaSweeper``: the Hydra sweeper
  (``hydra/sweeper=resnet_lab_optuna``, registered by ``hydra_plugins/resnet_lab_optuna``);
- ``resnet_lab.sweeps.pruning.OptunaPruning``: the callback that reports each epoch of a
  trial and prunes it;
- ``resnet_lab.sweeps.naming.sweep_key``: names a sweep's directory after its command.

Nothing is imported here: Hydra imports the plugin at every start-up, which must stay cheap.
"""
