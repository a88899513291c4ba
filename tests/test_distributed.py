"""Two CPU processes (gloo) training one supermask model data-parallel, through fairseq's wrappers.

fairseq's own launcher refuses several CPU processes, and its c10d wrapper passes GPU device ids,
which torch's DDP rejects for CPU modules: for c10d we build torch's DDP with fairseq's settings
(and fairseq's ModuleProxyWrapper) ourselves; legacy_ddp is fairseq's own class unchanged.
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.e2e  # two processes (torch.distributed, gloo)

STEPS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wrap(backend, model):
    from fairseq.models.distributed_fairseq_model import DistributedFairseqModel, ModuleProxyWrapper

    if backend == "legacy_ddp":
        args = torch.nn.Module()  # any object with the attributes fairseq reads
        args.tpu, args.ddp_backend = False, backend
        return DistributedFairseqModel(args, model, dist.group.WORLD, torch.device("cpu"))
    ddp = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False, bucket_cap_mb=25,
                                                    process_group=dist.group.WORLD, find_unused_parameters=False)
    return ModuleProxyWrapper(ddp)


def _worker(rank, world, backend, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    from conftest import build_model

    torch.manual_seed(1)  # same initial scores on both ranks, as fairseq's --seed gives
    model = build_model("one_layer_supermask_transformer_tiny", "--share-decoder-input-output-embed",
                        "--encoder-layers", "3", "--decoder-layers", "3", "--dropout", "0")
    frozen0 = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith(".scores")}
    wrapped = _wrap(backend, model)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own data
    for _ in range(STEPS):
        src = torch.randint(4, 44, (4, 7), generator=g)
        prev = torch.randint(4, 34, (4, 5), generator=g)
        out, _ = wrapped(src, torch.full((4,), 7), prev)
        out.logsumexp(-1).mean().backward()
        if backend == "legacy_ddp":
            wrapped.all_reduce_grads()
        opt.step()
        opt.zero_grad()
    sd = model.state_dict()
    torch.save({"sd": sd, "unchanged": all(torch.equal(sd[k], v) for k, v in frozen0.items())},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.parametrize("backend", ["c10d", "legacy_ddp"])
def test_two_processes_agree_bit_for_bit(backend, tmp_path):
    mp.start_processes(_worker, args=(2, backend, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["unchanged"] and r1["unchanged"]
    from one_layer_lottery.masks import topk_mask

    scores = [k for k in r0["sd"] if k.endswith(".scores")]
    assert scores
    for k, v in r0["sd"].items():
        assert torch.equal(v, r1["sd"][k]), k
    # and training did something (different data per rank was averaged, not ignored)
    torch.manual_seed(1)
    from conftest import build_model

    init = build_model("one_layer_supermask_transformer_tiny", "--share-decoder-input-output-embed",
                       "--encoder-layers", "3", "--decoder-layers", "3").state_dict()
    assert all(not torch.equal(init[k], r0["sd"][k]) for k in scores)
    assert any(not torch.equal(topk_mask(init[k], 0.5), topk_mask(r0["sd"][k], 0.5)) for k in scores)
