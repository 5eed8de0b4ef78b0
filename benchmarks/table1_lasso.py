"""Issue 8 benchmark: the clipped group-Lasso paper's Table I and Fig. 6 on Fashion-MNIST.

ResNet-20 with 1x1-conv shortcuts (Fig. 5b). Three generated subnets per method plus the full network
(the paper's subnet1..3 and subnet4 = full):
- clipped-Lasso: an Optuna (TPE) search over (lambda, a), each trial a FINETUNE-epoch fine-tune of
  the trained full network with Eq. (3); three subnets picked from its (accuracy, MACs) front,
  spread over MACs (`pick_subnets`);
- group-Lasso: the same search over lambda with Eq. (1); for each clipped subnet, the group-Lasso
  front member closest in MACs;
- uniform (S-NN): every layer at the same width ratio, the ratio whose MACs are closest to each
  clipped subnet's.
Every subnet is then trained individually from scratch (EPOCHS epochs), and each method's subnets
and the full network are trained together from scratch with Algorithm 1 (EPOCHS epochs, one private
BN per subnet): MACs, parameters, individual and dynamic test accuracy per subnet. The claim checked:
at equal or smaller MACs, clipped-Lasso subnets are at least as accurate as uniform ones,
individually and dynamically. Budgets are CPU-sized (the paper trains 160 epochs).

Resumable: every stage writes its result under HOME and is skipped when rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import optuna
import torch
from _common import RESULTS, write_result

from subnetsearch.data import DataSpec, load_data
from subnetsearch.search import EvaluationSettings, LassoSearch, run_training_search
from subnetsearch.search._lasso import GeneratedSubnet, pick_subnets, stored_subnets, subnet_front
from subnetsearch.storage import Store
from subnetsearch.supernets import LASSO_RESNET_DEFAULTS, build_supernet
from subnetsearch.supernets._checkpoint import load_checkpoint
from subnetsearch.supernets._lasso import LassoSupernet, uniform_match
from subnetsearch.trainers._evaluate import evaluate_accuracy
from subnetsearch.trainers._lasso import LassoRecipe, train_lasso

HOME = Path(os.environ.get("SUBNETSEARCH_BENCH_HOME", Path.home() / ".cache" / "subnetsearch-bench")) / "table1"
SPEC = DataSpec("fashion-mnist", None, 5000, 0)
ARCH = {**LASSO_RESNET_DEFAULTS, "family": "lasso-cifar-resnet"}
SETTINGS = EvaluationSettings(calibration_batches=5, calibration_batch_size=128, max_eval_batches=4)
METHODS = ("clipped-lasso", "group-lasso", "uniform")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def cached(name: str, make):
    path = HOME / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    value = make()
    path.write_text(json.dumps(value, indent=1))
    return value


def base_network(splits, epochs: int) -> LassoSupernet:
    path = HOME / "base" / "supernet.pt"
    if not path.exists():
        log(f"training the full network, {epochs} epochs")
        train_lasso(build_supernet(ARCH), splits, LassoRecipe(epochs=epochs), HOME / "base", SPEC.to_dict())
    return load_checkpoint(path).build()


def search(penalty: str, trials: int, finetune: int) -> list[GeneratedSubnet]:
    """The penalty's training-time search through the library's one code path (recorded in a store of
    its own, resumable: a rerun adds only the missing trials)."""
    url = f"sqlite:///{HOME / 'store.db'}"
    path = HOME / "base" / "supernet.pt"
    recipe = LassoRecipe(epochs=finetune, lr=0.02, penalty=penalty, lam=1.0)
    lasso = LassoSearch(load_checkpoint(path), path, penalty, recipe, SETTINGS, lambda_range=(0.01, 3.0))
    study = optuna.create_study(storage=url, study_name=f"lasso-{penalty}", directions=["maximize", "minimize"],
                                load_if_exists=True)
    done = len(stored_subnets(study))
    if done < trials:
        log(f"{penalty} search: {trials - done} more trials")
        run_training_search(Store(url), url, lasso, trials - done, name=f"lasso-{penalty}", sampler="tpe",
                            on_trial=lambda s: log(f"  lambda {s.lam:.3g} a {s.a:.3g}: {s.macs / 1e6:.2f} MMACs, "
                                                   f"pruned acc {s.accuracy:.4f}"))
    return stored_subnets(optuna.load_study(study_name=f"lasso-{penalty}", storage=url))


def closest(subnets: list[GeneratedSubnet], macs: int, taken: list[GeneratedSubnet]) -> GeneratedSubnet:
    front = [s for s in subnet_front(subnets) if s not in taken]
    return min(front or [s for s in subnets if s not in taken], key=lambda s: abs(s.macs - macs))


def test_accuracy(supernet: LassoSupernet, splits, index: int) -> float:
    supernet.state.select(index)
    return round(evaluate_accuracy(supernet, splits, splits.test), 5)


def individual(splits, method: str, rank: int, channels: list[int], epochs: int) -> dict:
    def make() -> dict:
        log(f"{method} subnet{rank}: individual training, {epochs} epochs")
        supernet = build_supernet({**ARCH, "subnets": [{"name": f"subnet{rank}", "channels": channels}]})
        train_lasso(supernet, splits, LassoRecipe(epochs=epochs, configs=(1,)), None, {})
        return {"test_acc": test_accuracy(supernet, splits, 1)}
    return cached(f"individual-{method}-subnet{rank}", make)


def fused(splits, method: str, configs: list[list[int]], epochs: int) -> dict:
    def make() -> dict:
        log(f"{method}: fused training of {len(configs) + 1} configurations, {epochs} epochs")
        names = [f"subnet{len(configs) - i}" for i in range(len(configs))]  # largest first
        supernet = build_supernet({**ARCH, "method": method, "subnets": [
            {"name": n, "channels": c} for n, c in zip(names, configs, strict=True)]})
        train_lasso(supernet, splits, LassoRecipe(epochs=epochs), None, {})
        return {"test_acc": {name: test_accuracy(supernet, splits, i) for i, name in enumerate(supernet.names)}}
    return cached(f"fused-{method}", make)


def plot(rows: dict, full: list[int], slots: list[str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    x = range(1, len(full) + 1)
    for axis, rank in zip(axes, (1, 2, 3), strict=True):
        for method, style in zip(METHODS, ("-o", "--s", ":^"), strict=True):
            axis.plot(x, rows[method][rank - 1]["channels"], style, label=method, markersize=4)
        axis.plot(x, full, color="grey", linewidth=0.8, label="full")
        axis.set_title(f"subnet{rank}")
        axis.set_xlabel("conv layer (stem, then conv1/conv2 of each block)")
    axes[0].set_ylabel("channels")
    axes[0].legend()
    figure.suptitle("Channels per layer of the generated subnets (the paper's Fig. 6), ResNet-20 on Fashion-MNIST")
    figure.tight_layout()
    path = RESULTS / "table1_lasso_channels.png"
    figure.savefig(path, dpi=110)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="individual and fused training epochs")
    parser.add_argument("--finetune", type=int, default=1, help="fine-tune epochs per generation trial")
    parser.add_argument("--trials", type=int, default=8, help="clipped-Lasso search trials (group-Lasso: 3/4)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    HOME.mkdir(parents=True, exist_ok=True)
    splits = load_data(SPEC)
    full = base_network(splits, args.base_epochs)
    full_channels = list(full.configs[0])
    full_cost = full.cost(full.full_mode())
    full_test = cached("full", lambda: {"test_acc": test_accuracy(full, splits, 0)})["test_acc"]
    clipped_all = search("clipped", args.trials, args.finetune)
    group_all = search("group", max(3, args.trials * 3 // 4), args.finetune)
    clipped = sorted(pick_subnets(clipped_all, 3, full_cost.macs), key=lambda s: s.macs)
    if len(clipped) < 3:
        raise SystemExit(f"the clipped search found only {len(clipped)} distinct pruned subnets; add --trials")
    group: list[GeneratedSubnet] = []
    for subnet in clipped:
        group.append(closest(group_all, subnet.macs, group))
    uniform = [uniform_match(full, subnet.macs) for subnet in clipped]
    chosen = {"clipped-lasso": [s.channels for s in clipped], "group-lasso": [s.channels for s in group],
              "uniform": uniform}
    rows: dict[str, list[dict]] = {}
    for method in METHODS:
        configs = chosen[method]
        dynamic = fused(splits, method, configs[::-1], args.epochs)["test_acc"]
        rows[method] = []
        for rank, channels in enumerate(configs, start=1):
            cost = full.cost_of(channels)
            rows[method].append({
                "subnet": f"subnet{rank}", "channels": channels, "macs": cost.macs, "params": cost.params,
                "individual_test_acc": individual(splits, method, rank, channels, args.epochs)["test_acc"],
                "dynamic_test_acc": dynamic[f"subnet{rank}"]})
        rows[method].append({"subnet": "subnet4 (full)", "channels": full_channels, "macs": full_cost.macs,
                             "params": full_cost.params, "individual_test_acc": full_test,
                             "dynamic_test_acc": dynamic["full"]})
    claims = []
    for rank in range(3):
        c, u = rows["clipped-lasso"][rank], rows["uniform"][rank]
        claims.append({"subnet": f"subnet{rank + 1}", "clipped_macs_le_uniform": c["macs"] <= u["macs"],
                       "macs_ratio_clipped_over_uniform": round(c["macs"] / u["macs"], 3),
                       "individual_gain_points": round(100 * (c["individual_test_acc"] - u["individual_test_acc"]), 2),
                       "dynamic_gain_points": round(100 * (c["dynamic_test_acc"] - u["dynamic_test_acc"]), 2)})
    holds = all(c["individual_gain_points"] >= 0 and c["dynamic_gain_points"] >= 0 for c in claims)
    picture = plot(rows, full_channels, full.slots)
    write_result("table1_lasso", {
        "setup": {"network": "ResNet-20 with 1x1-conv shortcuts (Fig. 5b), Fashion-MNIST 28x28",
                  "base_epochs": args.base_epochs, "epochs_individual_and_fused": args.epochs,
                  "finetune_epochs_per_trial": args.finetune, "clipped_trials": args.trials,
                  "group_trials": max(3, args.trials * 3 // 4), "recipe": asdict(LassoRecipe()),
                  "slots": full.slots, "plot": picture.name},
        "rows": rows, "claim_per_subnet": claims, "claim_holds_everywhere": holds,
        "clipped_trials": [s.to_dict() for s in clipped_all], "group_trials": [s.to_dict() for s in group_all]})
    for method in METHODS:
        for row in rows[method]:
            log(f"{method:>13} {row['subnet']:>14}: {row['macs'] / 1e6:6.2f} MMACs {row['params'] / 1e4:6.2f}e4 params "
                f"individual {row['individual_test_acc']:.4f} dynamic {row['dynamic_test_acc']:.4f}")


if __name__ == "__main__":
    main()
