"""resnet_lab.bench.gpu_check: what the GPU check runs, and what it reads back."""

from __future__ import annotations

import json
from pathlib import Path

from resnet_lab.bench import gpu_check


def test_the_gpu_check_covers_every_gpu_path(tmp_path):
    sections = {s.name: s.command for name, build in (
        ("bench", gpu_check._bench), ("train", gpu_check._train_runs), ("jpeg", gpu_check._jpeg))
        for s in build("cuda", False, tmp_path)}
    sections.update({s.name: s.command for s in gpu_check._fashion_mnist("cuda", False, tmp_path, "/data/fmnist")})
    assert set(sections) == {
        "bench_resnet_bf16_channels_last", "bench_resnet_bf16_channels_last_compiled", "bench_ours_vs_torchvision",
        "train_32-true", "train_16-mixed", "train_bf16-mixed", "jpeg", "fashion_mnist_resnet18"}
    bench = sections["bench_resnet_bf16_channels_last_compiled"]
    assert {"resnet50", "bf16-mixed", "--channels-last", "--compile", "224"} <= set(bench)
    for precision in ("32-true", "16-mixed", "bf16-mixed"):
        command = sections[f"train_{precision}"]
        assert {f"trainer.precision={precision}", "module.channels_last=true", "module.compile=true", "trainer=gpu"} <= set(command)
    assert "--jpeg-device-decode" in sections["jpeg"]
    assert {"experiment=fashion_mnist_resnet18", "data.root=/data/fmnist"} <= set(sections["fashion_mnist_resnet18"])


def test_time_to_the_fashion_mnist_target_is_read_from_the_epoch_lines(tmp_path):
    run = Path(tmp_path)
    (run / "run.json").write_text(json.dumps({"status": "finished", "epochs_done": 3, "wall_time_s": 30.0,
                                              "metrics": {"test/acc_top1": 0.951, "train/loss": 0.2}}))
    (run / "train.log").write_text(
        "[2026-12-01 10:00:00,000][resnet_lab][INFO] - learning rate 0.2\n"
        "[2026-12-01 10:00:10,000][resnet_lab][INFO] - epoch 1/3  train/loss 0.5  val/acc_top1 0.91  val/acc_top5 0.99\n"
        "[2026-12-01 10:00:20,500][resnet_lab][INFO] - epoch 2/3  train/loss 0.3  val/acc_top1 0.9495  val/acc_top5 1\n"
        "[2026-12-01 10:00:30,000][resnet_lab][INFO] - epoch 3/3  train/loss 0.2  val/acc_top1 0.955  val/acc_top5 1\n")
    result = gpu_check._read_run(run)
    assert result["status"] == "finished" and result["metrics"] == {"test/acc_top1": 0.951}
    assert (result["first_epoch_at_target"], result["seconds_to_target"]) == (2, 20.5)


def test_the_cpu_check_is_tiny_and_compiles_nothing(tmp_path):
    for build in (gpu_check._bench, gpu_check._train_runs):
        for section in build("cpu", True, tmp_path):
            assert "--compile" not in section.command and "module.compile=true" not in section.command
