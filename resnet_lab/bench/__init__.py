"""``python -m resnet_lab.bench``: throughput of our training path, measured side by side.

Sections (``--sections``):

* ``train``: training images/s of one model through our Lightning path (``ImageClassifier``
  + ``lightning.Trainer``) and through a plain PyTorch loop doing the same steps; their ratio
  is the framework's overhead;
* ``infer``: inference images/s of the same model;
* ``torchvision``: forward+backward images/s of our ResNets against torchvision's.

Every measurement is warm-up steps (untimed), then a timed block of steps between two device
synchronizations; the paths of a comparison run alternately in one process, and the report
gives medians over the repeats. See docs/BENCHMARKS.md.

Nothing on this code path imports Hydra, OmegaConf or wandb, so the command runs on a
machine with only torch, torchvision, lightning and torchmetrics installed.
"""
