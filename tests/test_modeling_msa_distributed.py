"""Global in-batch negatives: 2 gloo processes with batch B train exactly like 1 process with batch 2B."""

import os
import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from msa_hf import MSAConfig, MSAModel, MSATrainingInputs

BATCH = 3  # per process
WORLD = 2
CONFIG = {"same_image_positives": True, "same_text_positives": True, "contrastive_weight": 0.5, "text_pooling": "mean"}


def make_model() -> MSAModel:
    torch.manual_seed(0)
    model = MSAModel(MSAConfig.from_preset("msa-tiny", **CONFIG))
    with torch.no_grad():  # timm zero-initialises the last norm of each block: perturb, so every weight matters
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model.eval()  # eval: dropout off, BatchNorm statistics shared (they are per process under DDP)


def make_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    size = BATCH * WORLD
    image_ids = torch.tensor([0, 1, 1, 2, 3, 0])  # repeated ids across the two halves
    return {
        "pixel_values": torch.randn(size, 3, 64, 64, generator=generator),
        "input_ids": torch.randint(5, 120, (size, 16), generator=generator),
        "attention_mask": torch.ones(size, 16, dtype=torch.long),
        "image_ids": image_ids,
        "text_ids": torch.tensor([10, 11, 12, 13, 14, 11]),
        "image_text_ids": torch.tensor([[10, 11], [11, -1], [12, -1], [13, 10], [14, -1], [11, 12]]),
    }


IDS = ("text_ids", "image_text_ids")


def with_loss(model, batch, global_negatives=None):
    """The model's loss on a flat batch: its text ids (and the negatives' scope) go in through `MSATrainingInputs`."""
    inputs = {key: value for key, value in batch.items() if key not in IDS}
    training = MSATrainingInputs(**{key: batch[key] for key in IDS}, global_negatives=global_negatives)
    return model(**inputs, return_loss=True, training_inputs=training)


def loss_and_grads(model, batch, global_negatives=None):
    out = with_loss(model, batch, global_negatives)
    out.loss.backward()
    terms = torch.stack([out.loss, out.loss_triplet, out.loss_mscma, out.loss_csmmc, out.loss_contrastive]).detach()
    core = model.module if isinstance(model, DistributedDataParallel) else model
    return terms, {name: p.grad.clone() for name, p in core.named_parameters() if p.grad is not None}


def worker(rank: int, port: int, result_path: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        model = DistributedDataParallel(make_model())
        batch = {k: v[rank * BATCH : (rank + 1) * BATCH] for k, v in make_batch().items()}
        terms, grads = loss_and_grads(model, batch, global_negatives=True)
        dist.all_reduce(terms)  # the global loss is the mean of the processes' losses
        if rank == 0:
            torch.save({"terms": terms / WORLD, "grads": grads}, result_path)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or sys.platform == "win32", reason="needs torch.distributed with gloo")
def test_two_processes_equal_one_process_with_the_doubled_batch(tmp_path):
    single_terms, single_grads = loss_and_grads(make_model(), make_batch())

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    result_path = str(tmp_path / "rank0.pt")
    mp.start_processes(worker, args=(free_port(), result_path), nprocs=WORLD, start_method="spawn")
    result = torch.load(result_path, weights_only=True)
    multi_terms, multi_grads = result["terms"], result["grads"]

    torch.testing.assert_close(multi_terms, single_terms, atol=1e-5, rtol=1e-5)
    assert single_grads.keys() == multi_grads.keys()
    assert any("mscmat" in name for name in single_grads) and any("vision_model" in name for name in single_grads)
    for name, grad in single_grads.items():
        torch.testing.assert_close(multi_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_local_negatives_differ_from_global_ones():
    """Without gathering, each half sees only its own captions: the loss is not the doubled batch's."""
    model = make_model()
    batch = make_batch()
    whole = with_loss(model, batch).loss
    halves = [with_loss(model, {k: v[i * BATCH : (i + 1) * BATCH] for k, v in batch.items()}) for i in range(2)]
    assert not torch.allclose(whole, torch.stack([h.loss for h in halves]).mean())
